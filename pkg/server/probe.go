package server

import "github.com/slotkv/slotkv/pkg/probe"

// HealthcheckCommand is the services' `healthcheck` subcommand (see
// pkg/probe): it probes /readyz on the port of --http-addr, read from
// $SLOTKV_HTTP_ADDR or defaultHTTPAddr, over HTTPS with the service's own
// certificate when $SLOTKV_TLS_CERT and $SLOTKV_TLS_KEY are set. Mains call it first:
//
//	if code, ok := server.HealthcheckCommand(os.Args[1:], storage.DefaultOptions().HTTPAddr); ok {
//		os.Exit(code)
//	}
func HealthcheckCommand(args []string, defaultHTTPAddr string) (code int, ok bool) {
	return probe.Command(args, probe.Target{Addr: defaultHTTPAddr, AddrEnv: EnvHTTPAddr, Path: ReadyzPath, CertEnv: EnvTLSCert, KeyEnv: EnvTLSKey})
}
