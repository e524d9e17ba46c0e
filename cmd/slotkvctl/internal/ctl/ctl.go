// Package ctl is slotkvctl, the slotkv admin CLI, as testable functions:
// Main parses a command line and runs a subcommand; BootstrapEtcd,
// LoadTopology, FetchNodesEtcd and FetchInfo do the work and return values the printers format.
package ctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/version"
)

// ConnOptions tells how to reach the storage nodes.
type ConnOptions struct {
	Token string
	TLS   *tls.Config // nil: plaintext
}

const usage = `slotkvctl administers a slotkv cluster.

Usage:
  slotkvctl bootstrap --etcd-endpoints URL[,URL...] [--storage addr,...]
                      [--ranges n1=0-5460,n2=5461-10922,n3=10923-16383]
  slotkvctl topology  --etcd-endpoints URL[,URL...]
  slotkvctl info      --storage addr[,addr...]
  slotkvctl nodes     --etcd-endpoints URL[,URL...]   (live and dead nodes:
                      registered in etcd or not, addresses, health, slots)
  slotkvctl migrate    --migrator ADDR --source n1 --destination n2 --ranges 0-100,200-300
                       [--parallelism N] [--rate 50MiB] [--batch N] [--watch JOB]
  slotkvctl migrations --migrator ADDR
  slotkvctl bulkload   start|watch|list|pause|resume|cancel --downloader ADDR ...
                       (slotkvctl bulkload help)
  slotkvctl completion bash|zsh   (shell completion script)
  slotkvctl dev-certs  [--out .data/certs]   (development CA and certificates)
  slotkvctl version

Common flags (environment fallback in parentheses):
  --storage   storage node gRPC addresses, comma-separated (SLOTKV_STORAGE):
              info asks them; bootstrap asks them their ids and addresses
  --token     token sent with every call (SLOTKV_TOKEN); the admin token
              of a cluster with two tokens: --admin-token (SLOTKV_ADMIN_TOKEN)
              or --admin-token-file (SLOTKV_ADMIN_TOKEN_FILE) say it too
  --tls-ca    dial over TLS, trusting these PEM CAs (SLOTKV_TLS_CA); --tls for
              the system's roots; --tls-client-cert/--tls-client-key under mTLS
  --etcd-endpoints  the control plane's etcd (SLOTKV_ETCD_ENDPOINTS), required
              by bootstrap, topology and nodes: they use the records there; --etcd-prefix
              (SLOTKV_ETCD_PREFIX), --etcd-ca/--etcd-cert/--etcd-key for TLS
  --timeout   deadline of the whole command (SLOTKV_TIMEOUT, default 30s)
  --json      print JSON instead of text

bootstrap gives a new cluster its first topology (version 1): slots are split
evenly over the nodes in the order given, or as --ranges says (node ids are
the nodes' --node-id). It writes the topology to etcd once, the only place
the nodes take it from (a second run says at which version it is and changes
nothing); without --storage the nodes are those registered in etcd, ordered
by id.
`

// Main runs slotkvctl with args (without the program name) and returns the
// process exit code. lookupEnv reads the environment (os.LookupEnv in main).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "slotkvctl", version.Version)
		return 0
	case "bootstrap", "topology", "info", "nodes":
	case "migrate", "migrations":
		return mainMigrate(ctx, cmd, rest, stdout, stderr, lookupEnv)
	case "bulkload":
		return mainBulkload(ctx, rest, stdout, stderr, lookupEnv)
	case "completion":
		return mainCompletion(rest, stdout, stderr)
	case "dev-certs":
		return mainCerts(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "slotkvctl: unknown command %q\n\n%s", cmd, usage)
		return 2
	}

	fs := flag.NewFlagSet("slotkvctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	storage := flagenv.String(fs, "storage", "SLOTKV_STORAGE", "", "storage node gRPC addresses, comma-separated")
	var client server.ClientFlags
	client.Register(fs)
	// The control plane: bootstrap, topology and nodes read and write the
	// records in etcd, the only place the topology lives (info asks nodes
	// only).
	var etcd server.Etcd
	if cmd != "info" {
		etcd.RegisterFlags(fs)
	}
	timeout := flagenv.Duration(fs, "timeout", "SLOTKV_TIMEOUT", 30*time.Second, "deadline of the whole command")
	asJSON := fs.Bool("json", false, "print JSON")
	var ranges *string
	if cmd == "bootstrap" {
		ranges = fs.String("ranges", "", "slot ranges per node id: n1=0-5460,n2=5461-10922,... (default: even split in --storage order)")
	}
	if err := flagenv.ParseLookup(fs, rest, lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "slotkvctl:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "slotkvctl %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	if err := client.Finish(); err != nil {
		fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, err)
		return 2
	}
	if err := etcd.Finish(); err != nil {
		fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, err)
		return 2
	}
	addrs := cleanAddrs(strings.Split(*storage, ","))
	switch {
	case cmd == "info" && len(addrs) == 0:
		fmt.Fprintf(stderr, "slotkvctl %s: --storage (or SLOTKV_STORAGE) is required\n", cmd)
		return 2
	case cmd != "info" && !etcd.Enabled():
		// The topology lives in etcd, the only place nodes take it from.
		fmt.Fprintf(stderr, "slotkvctl %s: --etcd-endpoints (or SLOTKV_ETCD_ENDPOINTS) is required: the topology lives in etcd\n", cmd)
		return 2
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	conn := ConnOptions{Token: client.Token, TLS: client.TLS}
	if etcd.Enabled() {
		if err := mainEtcd(ctx, cmd, &etcd, addrs, ranges, conn, *asJSON, stdout); err != nil {
			fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, err)
			return 1
		}
		return 0
	}

	infos, err := FetchInfo(ctx, addrs, conn)
	if err == nil {
		err = PrintInfo(stdout, infos, *asJSON)
	}
	if err != nil {
		fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// mainEtcd runs bootstrap, topology or nodes on the records in etcd.
func mainEtcd(ctx context.Context, cmd string, e *server.Etcd, addrs []string, ranges *string, conn ConnOptions, asJSON bool, stdout io.Writer) error {
	cli, st, err := e.Connect(ctx, nil)
	if err != nil {
		return err
	}
	defer cli.Close()
	switch cmd {
	case "bootstrap":
		res, err := BootstrapEtcd(ctx, st, BootstrapOptions{Storage: addrs, Ranges: *ranges, Conn: conn})
		if err != nil {
			return err
		}
		return PrintBootstrap(stdout, res, asJSON)
	case "topology":
		t, err := LoadTopology(ctx, st)
		if err != nil {
			return err
		}
		return PrintTopology(stdout, t, asJSON)
	case "nodes":
		t, nodes, err := FetchNodesEtcd(ctx, st, conn)
		if err != nil {
			return err
		}
		if err := PrintNodesEtcd(stdout, t, nodes, asJSON); err != nil {
			return err
		}
		// Exit 1 when a node is dead or unwell, so scripts can check the
		// cluster.
		for _, n := range nodes {
			if !n.Healthy() {
				if !n.Live {
					return fmt.Errorf("node %s is dead (in the topology, not registered in etcd)", n.Node.ID)
				}
				return fmt.Errorf("node %s is %s", n.Node.ID, n.Health)
			}
		}
		return nil
	}
	return fmt.Errorf("%s does not read etcd", cmd)
}

func cleanAddrs(in []string) []string {
	var out []string
	for _, a := range in {
		if a = strings.TrimSpace(a); a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// describe shortens a gRPC status error to "Code: message".
func describe(err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", st.Code(), st.Message())
	}
	return err
}

// pool holds one connection per address for the duration of a command.
type pool struct {
	opts  ConnOptions
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPool(o ConnOptions) *pool { return &pool{opts: o, conns: map[string]*grpc.ClientConn{}} }

func (p *pool) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := dial.New(addr, dial.Options{Token: p.opts.Token, TLS: p.opts.TLS})
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

func (p *pool) node(addr string) (storagev1.NodeServiceClient, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	return storagev1.NewNodeServiceClient(c), nil
}

func (p *pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

// FetchInfo asks every address for its node info.
func FetchInfo(ctx context.Context, addrs []string, o ConnOptions) ([]*storagev1.GetNodeInfoResponse, error) {
	p := newPool(o)
	defer p.Close()
	var out []*storagev1.GetNodeInfoResponse
	for _, addr := range addrs {
		nc, err := p.node(addr)
		if err != nil {
			return nil, err
		}
		resp, err := nc.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			return nil, fmt.Errorf("storage node at %s: %w", addr, describe(err))
		}
		out = append(out, resp)
	}
	return out, nil
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// marshalJSON renders m as indented JSON. protojson varies its whitespace on
// purpose from build to build; re-indenting with encoding/json gives scripts
// a stable layout.
func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// rangeString formats ranges as "0-5460,10923-16383" ("-" when empty).
func rangeString(rs []slot.Range) string {
	set, _ := slot.NewRangeSet(rs...)
	if set.IsEmpty() {
		return "-"
	}
	return set.String()
}

func protoRanges(in []*clusterv1.SlotRange) []slot.Range {
	out := make([]slot.Range, 0, len(in))
	for _, r := range in {
		out = append(out, slot.Range{Start: uint16(r.GetStart()), End: uint16(r.GetEnd())})
	}
	return out
}

// PrintTopology writes a topology as a table (or JSON).
func PrintTopology(w io.Writer, t *topology.Topology, asJSON bool) error {
	if asJSON {
		return printJSON(w, t.Proto())
	}
	fmt.Fprintf(w, "topology version %d, %d nodes\n", t.Version(), len(t.Nodes()))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGRPC\tHTTP\tSLOTS\tRANGES")
	var assigned slot.RangeSet
	for _, n := range t.Nodes() {
		rs := t.RangesOf(n.ID)
		set, _ := slot.NewRangeSet(rs...)
		assigned = assigned.Union(set)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", n.ID, n.GRPCAddress, orDash(n.HTTPAddress), set.Len(), rangeString(rs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if free := slot.Full().Subtract(assigned); !free.IsEmpty() {
		fmt.Fprintf(w, "unassigned slots: %s (%d)\n", free, free.Len())
	}
	return nil
}

// PrintBootstrap writes what a bootstrap did.
func PrintBootstrap(w io.Writer, r *BootstrapResult, asJSON bool) error {
	if asJSON {
		type nodeJSON struct {
			ID          string `json:"id"`
			GRPCAddress string `json:"grpc_address"`
			Ranges      string `json:"ranges"`
			Changed     bool   `json:"changed"`
		}
		out := struct {
			AlreadyBootstrappedAt uint64     `json:"already_bootstrapped_at,omitempty"`
			EtcdKey               string     `json:"etcd_key,omitempty"`
			Version               uint64     `json:"version,omitempty"`
			Nodes                 []nodeJSON `json:"nodes,omitempty"`
			Unassigned            string     `json:"unassigned,omitempty"`
			StaleAddresses        []string   `json:"stale_addresses,omitempty"`
		}{AlreadyBootstrappedAt: r.AlreadyAt, EtcdKey: r.Etcd, Unassigned: r.Unassigned.String(), StaleAddresses: r.StaleAddresses}
		if r.Topology != nil {
			out.Version = r.Topology.Version()
		}
		for _, n := range r.Nodes {
			out.Nodes = append(out.Nodes, nodeJSON{n.Node.ID, n.Node.GRPCAddress, n.Ranges.String(), n.Changed})
		}
		return writeJSON(w, out)
	}
	if r.AlreadyAt > 0 && r.Etcd != "" {
		_, err := fmt.Fprintf(w, "cluster is already bootstrapped at topology version %d in etcd (%s); nothing to do\n", r.AlreadyAt, r.Etcd)
		return err
	}
	if r.AlreadyAt > 0 {
		if _, err := fmt.Fprintf(w, "cluster is already bootstrapped at topology version %d; nothing to do\n", r.AlreadyAt); err != nil {
			return err
		}
		if len(r.StaleAddresses) > 0 {
			fmt.Fprintf(w, "the topology keeps the addresses the nodes had at bootstrap; these differ now (a new cluster, e.g. with fresh data directories, would take them):\n")
			for _, a := range r.StaleAddresses {
				fmt.Fprintf(w, "  %s\n", a)
			}
		}
		return nil
	}
	changed := 0
	for _, n := range r.Nodes {
		if n.Changed {
			changed++
		}
	}
	switch {
	case r.Etcd != "":
		fmt.Fprintf(w, "bootstrapped topology version %d in etcd (%s) with %d nodes; the nodes install it from etcd\n", r.Topology.Version(), r.Etcd, len(r.Nodes))
	case changed == 0:
		fmt.Fprintf(w, "cluster already bootstrapped with this topology version %d on %d nodes; nothing changed\n", r.Topology.Version(), len(r.Nodes))
	default:
		fmt.Fprintf(w, "bootstrapped topology version %d on %d nodes\n", r.Topology.Version(), len(r.Nodes))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGRPC\tSLOTS\tRANGES\tRESULT")
	for _, n := range r.Nodes {
		res := "installed"
		if r.Etcd != "" {
			res = "written"
		} else if !n.Changed {
			res = "already held"
		}
		rs := n.Ranges.String()
		if rs == "" {
			rs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n.Node.ID, n.Node.GRPCAddress, n.Ranges.Len(), rs, res)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !r.Unassigned.IsEmpty() {
		fmt.Fprintf(w, "warning: slots %s (%d) are served by no node\n", r.Unassigned, r.Unassigned.Len())
	}
	return nil
}

// PrintInfo writes node infos.
func PrintInfo(w io.Writer, infos []*storagev1.GetNodeInfoResponse, asJSON bool) error {
	if asJSON {
		if len(infos) == 1 {
			return printJSON(w, infos[0])
		}
		fmt.Fprintln(w, "[")
		for i, in := range infos {
			b, err := marshalJSON(in)
			if err != nil {
				return err
			}
			sep := ","
			if i == len(infos)-1 {
				sep = ""
			}
			fmt.Fprintf(w, "%s%s\n", b, sep)
		}
		_, err := fmt.Fprintln(w, "]")
		return err
	}
	for i, in := range infos {
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		n := in.GetNode()
		owned := protoRanges(in.GetOwned())
		set, _ := slot.NewRangeSet(owned...)
		fmt.Fprintf(tw, "node\t%s\n", n.GetId())
		fmt.Fprintf(tw, "grpc address\t%s\n", orDash(n.GetGrpcAddress()))
		fmt.Fprintf(tw, "http address\t%s\n", orDash(n.GetHttpAddress()))
		fmt.Fprintf(tw, "server version\t%s\n", orDash(in.GetVersion()))
		if in.GetTopologyVersion() == 0 {
			fmt.Fprintf(tw, "topology version\tnone (not bootstrapped)\n")
		} else {
			fmt.Fprintf(tw, "topology version\t%d\n", in.GetTopologyVersion())
		}
		fmt.Fprintf(tw, "owned slots\t%s (%d)\n", rangeString(owned), set.Len())
		fmt.Fprintf(tw, "keys\t%d\n", in.GetKeyCount())
		fmt.Fprintf(tw, "disk\tlsm %s, vlog %s\n", bytesString(in.GetLsmBytes()), bytesString(in.GetVlogBytes()))
		for _, line := range slotStates(in) {
			fmt.Fprintf(tw, "slot state\t%s\n", line)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
