package server

import (
	"fmt"
	"net"
	"os"
)

// Advertised turns a bound address into one peers can dial: a wildcard host
// becomes the hostname (set --advertise-grpc/--advertise-http when that is
// not resolvable by peers).
func Advertised(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !(tcp.IP == nil || tcp.IP.IsUnspecified()) {
		return a.String()
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}

// AdvertisedGRPC is the gRPC address this process reports: AdvertiseGRPC,
// or else the bound address g made dialable.
func (c *Common) AdvertisedGRPC(g net.Addr) string {
	if c.AdvertiseGRPC != "" {
		return c.AdvertiseGRPC
	}
	return Advertised(g)
}
