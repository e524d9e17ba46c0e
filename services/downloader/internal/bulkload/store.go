package bulkload

import (
	"encoding/json"

	"fmt"
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
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
	// Ingested: records acknowledged by the storage nodes (progress).
	Ingested uint64 `json:"ingested,omitempty"`
	// Checkpoint: every record before this index (from the file's start)
	// is acknowledged; a new ingest of the file skips that many.
	Checkpoint uint64   `json:"checkpoint,omitempty"`
	Attempts   uint32   `json:"attempts,omitempty"`
	Nodes      []string `json:"nodes,omitempty"` // node ids the records went to
	Error      string   `json:"error,omitempty"`
}

type nodeCount struct {
	Records uint64 `json:"records"`
	Bytes   uint64 `json:"bytes"`
}

const jobKeyPrefix = "job/"

// store persists job records in Badger.
type store struct {
	db *badger.DB
}

func openStore(dir string, log *slog.Logger) (*store, error) {
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithValueLogFileSize(16 << 20).
		WithMemTableSize(8 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(0)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open job store %s: %w", dir, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) put(r *jobRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(jobKeyPrefix+r.ID), b)
	})
}

func (s *store) load() ([]*jobRecord, error) {
	var out []*jobRecord
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(jobKeyPrefix), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error {
				r := new(jobRecord)
				if err := json.Unmarshal(v, r); err != nil {
					return fmt.Errorf("job record %s: %w", item.Key(), err)
				}
				out = append(out, r)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// badgerLogger sends Badger's chatter to slog: warnings and errors as
// they are, info and debug at debug level.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger: " + trim(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger: " + trim(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Infof(f string, a ...any) { l.log.Debug("badger: " + trim(fmt.Sprintf(f, a...))) }
func (l badgerLogger) Debugf(f string, a ...any) {
	l.log.Debug("badger: " + trim(fmt.Sprintf(f, a...)))
}

func trim(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
