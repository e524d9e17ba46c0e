package resp

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/slotkv/slotkv/pkg/auth"
)

// redisVersion is the Redis version whose commands and replies slotkv
// follows; HELLO and INFO report it so clients pick the right dialect.
const redisVersion = "7.2.0"

func cmdOK(x *call) error {
	x.w.ok()
	return nil
}

func cmdPing(x *call) error {
	switch len(x.args) {
	case 1:
		x.w.status("PONG")
	case 2:
		x.w.bulk(x.args[1])
	default:
		return Error("ERR wrong number of arguments for 'ping' command")
	}
	return nil
}

func cmdEcho(x *call) error {
	x.w.bulk(x.args[1])
	return nil
}

func cmdSelect(x *call) error {
	n, ok := parseInt(x.args[1])
	switch {
	case !ok:
		return Error(errNotInteger)
	case n != 0 && x.s.o.Cluster != nil:
		return Error("ERR SELECT is not allowed in cluster mode")
	case n != 0:
		return Error("ERR DB index is out of range")
	}
	x.w.ok()
	return nil
}

func cmdQuit(x *call) error {
	x.sess.quit = true
	x.w.ok()
	_ = x.w.c.Close()
	return nil
}

// authenticate checks user and token and records the class on the
// session. Only the user "default" exists.
func (x *call) authenticate(user, token string) error {
	if x.s.o.Tokens.Open() {
		return Error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
	}
	class := x.s.o.Tokens.Match(token)
	if user != "default" || class == auth.Exempt {
		return Error("WRONGPASS invalid username-password pair or user is disabled.")
	}
	x.sess.authed, x.sess.admin = true, class == auth.Admin
	return nil
}

// cmdAuth is AUTH token or AUTH default token.
func cmdAuth(x *call) error {
	var err error
	switch len(x.args) {
	case 2:
		err = x.authenticate("default", string(x.args[1]))
	case 3:
		err = x.authenticate(string(x.args[1]), string(x.args[2]))
	default:
		return Error(errSyntax)
	}
	if err != nil {
		return err
	}
	x.w.ok()
	return nil
}

// cmdHello is HELLO [protover [AUTH user token] [SETNAME name]].
func cmdHello(x *call) error {
	proto := 2
	if x.sess.resp3 {
		proto = 3
	}
	if len(x.args) > 1 {
		n, ok := parseInt(x.args[1])
		if !ok {
			return Error("ERR Protocol version is not an integer or out of range")
		}
		if n != 2 && n != 3 {
			return Error("NOPROTO unsupported protocol version")
		}
		proto = int(n)
	}
	var name *string
	authed := false
	for i := 2; i < len(x.args); i++ {
		switch upper(x.args[i]) {
		case "AUTH":
			if i+2 >= len(x.args) {
				return Error(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", clip(x.args[i])))
			}
			if err := x.authenticate(string(x.args[i+1]), string(x.args[i+2])); err != nil {
				return err
			}
			authed = true
			i += 2
		case "SETNAME":
			if i+1 >= len(x.args) {
				return Error(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", clip(x.args[i])))
			}
			n := string(x.args[i+1])
			if err := checkClientName(n); err != nil {
				return err
			}
			name = &n
			i++
		default:
			return Error(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", clip(x.args[i])))
		}
	}
	if !x.sess.authed && !authed {
		return Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
	}
	if name != nil {
		x.sess.name = *name
	}
	x.sess.resp3 = proto == 3
	x.w.resp3 = x.sess.resp3
	mode := "standalone"
	if x.s.o.Cluster != nil {
		mode = "cluster"
	}
	x.w.mapHeader(7)
	x.w.bulkString("server")
	x.w.bulkString("redis")
	x.w.bulkString("version")
	x.w.bulkString(redisVersion)
	x.w.bulkString("proto")
	x.w.int(int64(proto))
	x.w.bulkString("id")
	x.w.int(x.sess.id)
	x.w.bulkString("mode")
	x.w.bulkString(mode)
	x.w.bulkString("role")
	x.w.bulkString("master")
	x.w.bulkString("modules")
	x.w.array(0)
	return nil
}

// checkClientName refuses names Redis refuses.
func checkClientName(n string) error {
	for _, r := range n {
		if r < '!' || r > '~' {
			return Error("ERR Client names cannot contain spaces, newlines or special characters.")
		}
	}
	return nil
}

// cmdClient is CLIENT SETNAME|GETNAME|ID|SETINFO|INFO|LIST.
func cmdClient(x *call) error {
	sub := strings.ToLower(string(x.args[1]))
	wrong := Error(fmt.Sprintf("ERR wrong number of arguments for 'client|%s' command", sub))
	switch sub {
	case "setname":
		if len(x.args) != 3 {
			return wrong
		}
		n := string(x.args[2])
		if err := checkClientName(n); err != nil {
			return err
		}
		x.sess.name = n
		x.w.ok()
	case "getname":
		if len(x.args) != 2 {
			return wrong
		}
		if x.sess.name == "" {
			x.w.null()
		} else {
			x.w.bulkString(x.sess.name)
		}
	case "id":
		if len(x.args) != 2 {
			return wrong
		}
		x.w.int(x.sess.id)
	case "setinfo":
		if len(x.args) != 4 {
			return wrong
		}
		v := string(x.args[3])
		switch upper(x.args[2]) {
		case "LIB-NAME":
			if err := checkClientName(v); err != nil {
				return err
			}
			x.sess.libName = v
		case "LIB-VER":
			if err := checkClientName(v); err != nil {
				return err
			}
			x.sess.libVer = v
		default:
			return Error(fmt.Sprintf("ERR Unrecognized option '%s'", clip(x.args[2])))
		}
		x.w.ok()
	case "info":
		if len(x.args) != 2 {
			return wrong
		}
		x.w.bulkString(x.clientLine())
	case "list":
		// This connection only: slotkv does not expose other clients.
		x.w.bulkString(x.clientLine())
	default:
		return Error(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLIENT HELP.", clip(x.args[1])))
	}
	return nil
}

// clientLine is CLIENT INFO's line for this connection.
func (x *call) clientLine() string {
	resp := 2
	if x.sess.resp3 {
		resp = 3
	}
	laddr := ""
	if nc := x.w.c.NetConn(); nc != nil {
		laddr = nc.LocalAddr().String()
	}
	return fmt.Sprintf("id=%d addr=%s laddr=%s name=%s age=%d db=0 resp=%d lib-name=%s lib-ver=%s\n",
		x.sess.id, x.w.c.RemoteAddr(), laddr, x.sess.name, int64(sinceSeconds(x.sess.created)), resp, x.sess.libName, x.sess.libVer)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
