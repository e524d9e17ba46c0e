// Package resp serves slotkv over the Redis protocol (RESP2, and RESP3
// after HELLO 3) on github.com/tidwall/redcon, so redis-cli,
// redis-benchmark and Redis client libraries work against slotkv.
//
// One command table (commands.go) holds every command with Redis's arity,
// flags and key positions (what COMMAND INFO answers and what the server
// checks before running a command), and one handler per command that speaks
// Redis's reply shapes and error texts. The handlers reach the data through
// a Backend, so the same code serves both modes:
//
//   - proxy mode (the router): Options.Cluster is nil; the server owns every
//     slot, and multi-key commands across slots are fanned out by the
//     Backend;
//   - cluster mode (a storage node): Options.Cluster says which slots this
//     node serves; a key of another slot is answered -MOVED <slot>
//     <host:port> with the owner's RESP address, a slot frozen for a
//     hand-off -TRYAGAIN, multi-key commands whose keys are in several
//     slots -CROSSSLOT, and CLUSTER SLOTS/SHARDS/NODES/INFO/KEYSLOT/MYID
//     describe the live topology, so cluster clients (go-redis
//     ClusterClient, redis-cli -c) follow migrations on their own.
//
// Tokens: with a token set, every command but AUTH, HELLO and QUIT answers
// -NOAUTH until the connection has sent AUTH <token> (or AUTH default
// <token>, or HELLO ... AUTH default <token>) with the data or the admin
// token; FLUSHALL needs the admin token.
//
// Pipelines (pipeline.go): runs of GETs, of plain SETs and MSETs, and of
// increments of one key are each one batch call, answered as if run one by
// one.
//
// SCAN cursors: a slotkv scan position is a slot and a key of any length,
// which does not fit the integer cursor Redis clients expect, so the
// server keeps the positions of recent scans in a bounded table and hands
// out its integer ids (as Kvrocks does); an id too old to be in the table
// is -ERR invalid cursor.
package resp
