package bulkload

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// jobRecord is what is persisted of a job: everything needed to continue it
// after a restart (the manifest's file list included, so the manifest is
// not fetched again).
type jobRecord struct {
	ID          string        `json:"id"`
	ManifestURL string        `json:"manifest_url"`
	State       State         `json:"state"`
	Error       string        `json:"error,omitempty"`
	Created     time.Time     `json:"created"`
	Updated     time.Time     `json:"updated"`
	HaveFiles   bool          `json:"have_files"` // the manifest was fetched and parsed
	Records     uint64        `json:"records"`    // from the manifest
	Files       []*fileRecord `json:"files,omitempty"`
	// Nodes counts what was acknowledged by each storage node, by node id.
	Nodes map[string]*nodeCount `json:"nodes,omitempty"`
}

type fileRecord struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Slots  string `json:"slots"`
	Keys   uint64 `json:"keys"`
	First  string `json:"first_key"`
	Last   string `json:"last_key"`

	State State `json:"state"`
	// Verified: the whole file is on disk under its name and matched the
	// manifest's size and sha256.
	Verified bool `json:"verified,omitempty"`
	// Downloaded bytes (of the part file while downloading).
	Downloaded int64 `json:"downloaded,omitempty"`
	// Ingested: records acknowledged by the storage nodes, i.e. committed
	// there and readable (Acked.count()).
	Ingested uint64 `json:"ingested,omitempty"`
	// Acked: the indices (from the file's start) of every record a storage
	// node has acknowledged; a new ingest of the file skips them.
	Acked spans `json:"acked,omitempty"`
	// Checkpoint: every record before this index is acknowledged (the
	// prefix of Acked; records of older versions have only this).
	Checkpoint uint64   `json:"checkpoint,omitempty"`
	Attempts   uint32   `json:"attempts,omitempty"`
	Nodes      []string `json:"nodes,omitempty"` // node ids the records went to
	Error      string   `json:"error,omitempty"`
}

// fileKeysJSON holds, when saved, a first or last key that is not valid
// UTF-8: encoding/json would replace its bytes with U+FFFD in first_key
// (last_key), and the ingest after a restart would then find the file's
// first key different from the manifest's. Keys that are UTF-8 stay in
// first_key and last_key, as records saved before binary keys have them.
type fileKeysJSON struct {
	FirstB64 []byte `json:"first_key_b64,omitempty"`
	LastB64  []byte `json:"last_key_b64,omitempty"`
}

func (f fileRecord) MarshalJSON() ([]byte, error) {
	type plain fileRecord // without these methods
	out := struct {
		plain
		fileKeysJSON
	}{plain: plain(f)}
	if !utf8.ValidString(f.First) {
		out.FirstB64, out.plain.First = []byte(f.First), ""
	}
	if !utf8.ValidString(f.Last) {
		out.LastB64, out.plain.Last = []byte(f.Last), ""
	}
	return json.Marshal(out)
}

func (f *fileRecord) UnmarshalJSON(b []byte) error {
	type plain fileRecord
	in := struct {
		*plain
		fileKeysJSON
	}{plain: (*plain)(f)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if in.FirstB64 != nil {
		f.First = string(in.FirstB64)
	}
	if in.LastB64 != nil {
		f.Last = string(in.LastB64)
	}
	return nil
}

// ackedSet is the set of acknowledged records (a record saved before
// Acked existed has only its Checkpoint).
func (f *fileRecord) ackedSet() spans {
	if len(f.Acked) == 0 && f.Checkpoint > 0 {
		return spans{{0, f.Checkpoint}}
	}
	return f.Acked
}

// setAcked records the acknowledged set and the counts derived from it.
func (f *fileRecord) setAcked(s spans) {
	f.Acked, f.Ingested, f.Checkpoint = s, s.count(), s.prefix()
}

type nodeCount struct {
	Records uint64 `json:"records"`
	Bytes   uint64 `json:"bytes"`
}
