package jobstore

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

type rec struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func TestPutLoadSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Open[rec](dir, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []rec{{"b", "running"}, {"a", "done"}, {"b", "failed"}} {
		if err := s.Put(r.ID, &r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open[rec](dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || *got[0] != (rec{"a", "done"}) || *got[1] != (rec{"b", "failed"}) {
		t.Fatalf("loaded %+v %+v, want a:done and b:failed (the last put wins)", got[0], got[1])
	}
}

func TestCorruptRecordIsNamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bad, err := Open[struct{ N string }](dir, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Put("x", &struct{ N string }{"not a number"}); err != nil {
		t.Fatal(err)
	}
	bad.Close()
	s, err := Open[struct{ N int }](dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Load(); err == nil {
		t.Fatal("a record that does not decode must be an error")
	}
	if err := os.WriteFile(filepath.Join(dir, "blocker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open[rec](filepath.Join(dir, "blocker", "db"), log); err == nil {
		t.Fatal("opening under a file must fail")
	}
}
