package dataset

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/slotkv/slotkv/pkg/slot"
)

// FormatVersion is the dataset format version this package writes, both
// in the manifest and in data file headers; it reads MinFormatVersion to
// FormatVersion. Version 2 added a per-record expiry and binary keys in
// the manifest (first_key_b64, last_key_b64); version 1 datasets read as
// before, their records without expiry.
const (
	FormatVersion    = 2
	MinFormatVersion = 1
)

// ManifestName is the file name of the manifest in a dataset directory.
const ManifestName = "manifest.json"

// MaxNameLen is the longest file name a manifest may list, in bytes.
const MaxNameLen = 255

// Default limits applied by [ParseManifest] to zero fields of [Limits].
const (
	DefaultMaxManifestBytes = 16 << 20
	DefaultMaxFileBytes     = 64 << 30
	DefaultMaxFiles         = 100000
)

// Sentinel errors. Every error this package returns wraps exactly one of
// them, or is an I/O error from the caller's reader or writer.
var (
	// ErrInvalidManifest reports a manifest that is not valid JSON, has
	// unknown or missing fields, or fields with bad values.
	ErrInvalidManifest = errors.New("dataset: invalid manifest")
	// ErrUnsupportedVersion reports a manifest or data file of a format
	// version outside MinFormatVersion to FormatVersion.
	ErrUnsupportedVersion = errors.New("dataset: unsupported format version")
	// ErrUnsafeName reports a file name that is not a plain name inside the
	// download directory (path separators, "..", leading dot, control
	// characters, too long, ...).
	ErrUnsafeName = errors.New("dataset: unsafe file name")
	// ErrTooLarge reports a manifest, file or file count over a limit.
	ErrTooLarge = errors.New("dataset: too large")
	// ErrChecksum reports a data block whose CRC-32C does not match.
	ErrChecksum = errors.New("dataset: checksum mismatch")
	// ErrCorrupt reports a data file that is not well formed: bad magic,
	// truncated block or file, records out of order or outside the file's
	// slot range, key count or first/last key different from the manifest.
	ErrCorrupt = errors.New("dataset: corrupt data file")
)

// Manifest describes a dataset: its format and its data files, listed in
// (slot, key) order.
type Manifest struct {
	FormatVersion int    `json:"format_version"`
	SlotCount     int    `json:"slot_count"` // must be slot.Count (16384)
	Records       uint64 `json:"records"`    // sum of the files' keys
	Files         []File `json:"files"`
}

// File describes one data file of a dataset. FirstKey and LastKey hold
// the keys' bytes, which need not be UTF-8: in JSON a key that is valid
// UTF-8 is written as first_key (last_key), any other as base64 in
// first_key_b64 (last_key_b64, format version 2 on).
type File struct {
	Name   string `json:"name"`   // plain file name in the dataset directory
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // lowercase hex of the whole file
	// Slots is the inclusive slot range "first-last" of the file's records,
	// e.g. "0-4095". A slot may be shared by two adjacent files when it
	// holds many keys.
	Slots    string `json:"slots"`
	Keys     uint64 `json:"keys"`      // number of records
	FirstKey string `json:"first_key"` // key of the first record
	LastKey  string `json:"last_key"`  // key of the last record
}

// MarshalJSON writes f with each key as first_key/last_key when it is
// valid UTF-8, as first_key_b64/last_key_b64 otherwise.
func (f File) MarshalJSON() ([]byte, error) {
	type plain File // without this method
	out := struct {
		plain
		FirstKey    *string `json:"first_key,omitempty"`
		FirstKeyB64 *string `json:"first_key_b64,omitempty"`
		LastKey     *string `json:"last_key,omitempty"`
		LastKeyB64  *string `json:"last_key_b64,omitempty"`
	}{plain: plain(f)}
	out.FirstKey, out.FirstKeyB64 = keyJSON(f.FirstKey)
	out.LastKey, out.LastKeyB64 = keyJSON(f.LastKey)
	return json.Marshal(out)
}

// keyJSON returns the JSON form of a manifest key: (k, nil) when it is
// valid UTF-8, (nil, base64 of k) otherwise.
func keyJSON(k string) (*string, *string) {
	if utf8.ValidString(k) {
		return &k, nil
	}
	b := base64.StdEncoding.EncodeToString([]byte(k))
	return nil, &b
}

// SlotRange parses f.Slots.
func (f File) SlotRange() (slot.Range, error) {
	r, err := slot.ParseRange(f.Slots)
	if err != nil {
		return slot.Range{}, fmt.Errorf("%w: %s: slots: %v", ErrInvalidManifest, f.Name, err)
	}
	return r, nil
}

// Limits caps what [ParseManifest] accepts. Zero (or negative) fields take
// the defaults: 16 MiB manifests, 64 GiB files, 100000 files.
type Limits struct {
	MaxManifestBytes int64
	MaxFileBytes     int64
	MaxFiles         int
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifestBytes <= 0 {
		l.MaxManifestBytes = DefaultMaxManifestBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// ParseManifest reads a manifest from r (at most lim.MaxManifestBytes of it)
// and validates it (see [Manifest.Validate]). Unknown JSON fields, missing
// fields, null values and trailing data are rejected. Errors name the field
// at fault, e.g. `files[3].name: "../x" would leave the download directory`,
// and wrap one of the sentinel errors.
func ParseManifest(r io.Reader, lim Limits) (*Manifest, error) {
	lim = lim.withDefaults()
	data, err := io.ReadAll(io.LimitReader(r, lim.MaxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("dataset: reading manifest: %w", err)
	}
	if int64(len(data)) > lim.MaxManifestBytes {
		return nil, fmt.Errorf("%w: manifest is larger than the limit of %d bytes", ErrTooLarge, lim.MaxManifestBytes)
	}

	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: empty manifest", ErrInvalidManifest)
	}
	// Check the version first, leniently, so a manifest of a newer format
	// (which may have fields this code does not know) is reported as such.
	var ver struct {
		FormatVersion json.RawMessage `json:"format_version"`
	}
	if err := json.Unmarshal(data, &ver); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, jsonError(data, err))
	}
	if len(ver.FormatVersion) > 0 && string(ver.FormatVersion) != "null" {
		var v int
		if err := json.Unmarshal(ver.FormatVersion, &v); err != nil {
			return nil, fmt.Errorf("%w: format_version: %s is not an integer", ErrInvalidManifest, ver.FormatVersion)
		}
		if v < MinFormatVersion || v > FormatVersion {
			return nil, fmt.Errorf("%w: format_version: %d is not supported (this build reads versions %d to %d)", ErrUnsupportedVersion, v, MinFormatVersion, FormatVersion)
		}
	}

	var raw rawManifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, jsonError(data, err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: unexpected data after the JSON object", ErrInvalidManifest)
	}
	m, err := raw.manifest()
	if err != nil {
		return nil, err
	}
	if err := m.Validate(lim); err != nil {
		return nil, err
	}
	return m, nil
}

// jsonError turns a decoding error into a message with a field path or
// offset.
func jsonError(data []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte offset %d: %v", se.Offset, err)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "manifest"
		}
		// encoding/json names the field of an array element without its
		// index ("files.name"); find it, so the error says which file.
		if field == "files" || strings.HasPrefix(field, "files.") {
			if i := fileIndexAt(data, te.Offset); i >= 0 {
				field = fmt.Sprintf("files[%d]", i) + strings.TrimPrefix(field, "files")
			}
		}
		return fmt.Sprintf("%s: JSON %s cannot be a %s", field, te.Value, te.Type)
	case err == io.EOF || len(bytes.TrimSpace(data)) == 0:
		return "empty manifest"
	case err == io.ErrUnexpectedEOF:
		return "malformed JSON: unexpected end of input"
	}
	return err.Error() // e.g. `json: unknown field "x"`
}

// fileIndexAt returns the index of the element of the top-level "files"
// array (matched without regard to case, as encoding/json matches it)
// whose text holds byte offset off of data, or -1.
func fileIndexAt(data []byte, off int64) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return -1
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return -1
		}
		var val json.RawMessage
		if dec.Decode(&val) != nil {
			return -1
		}
		key, _ := k.(string)
		if !strings.EqualFold(key, "files") {
			continue
		}
		start := dec.InputOffset() - int64(len(val))
		arr := json.NewDecoder(bytes.NewReader(val))
		if t, err := arr.Token(); err != nil || t != json.Delim('[') {
			continue
		}
		for i := 0; arr.More(); i++ {
			var skip json.RawMessage
			if arr.Decode(&skip) != nil {
				break
			}
			if start+arr.InputOffset() >= off {
				return i
			}
		}
	}
	return -1
}

// rawManifest mirrors Manifest with pointers so that missing fields can be
// told from zero values.
type rawManifest struct {
	FormatVersion *int       `json:"format_version"`
	SlotCount     *int       `json:"slot_count"`
	Records       *uint64    `json:"records"`
	Files         *[]rawFile `json:"files"`
}

type rawFile struct {
	Name     *string `json:"name"`
	Size     *int64  `json:"size"`
	SHA256   *string `json:"sha256"`
	Slots    *string `json:"slots"`
	Keys     *uint64 `json:"keys"`
	FirstKey *string `json:"first_key"`
	LastKey  *string `json:"last_key"`
	// Version 2: keys that are not UTF-8, in base64.
	FirstKeyB64 *string `json:"first_key_b64"`
	LastKeyB64  *string `json:"last_key_b64"`
}

// key returns the key given as plain (name) or as base64 (name+"_b64"):
// exactly one of them, the base64 one only from format version 2.
func rawKey(version int, field string, plain, b64 *string) (string, error) {
	switch {
	case plain != nil && b64 != nil:
		return "", fmt.Errorf("%w: %s_b64: give %s or %s_b64, not both", ErrInvalidManifest, field, field, field)
	case plain != nil:
		return *plain, nil
	case b64 == nil:
		return "", missing(field)
	case version < 2:
		return "", fmt.Errorf("%w: %s_b64: needs format_version 2 or later, this manifest is version %d", ErrInvalidManifest, field, version)
	}
	k, err := base64.StdEncoding.DecodeString(*b64)
	if err != nil {
		return "", fmt.Errorf("%w: %s_b64: %q is not base64: %v", ErrInvalidManifest, field, *b64, err)
	}
	return string(k), nil
}

func missing(field string) error {
	return fmt.Errorf("%w: %s: missing (or null)", ErrInvalidManifest, field)
}

func (raw *rawManifest) manifest() (*Manifest, error) {
	switch {
	case raw.FormatVersion == nil:
		return nil, missing("format_version")
	case raw.SlotCount == nil:
		return nil, missing("slot_count")
	case raw.Records == nil:
		return nil, missing("records")
	case raw.Files == nil:
		return nil, missing("files")
	}
	m := &Manifest{
		FormatVersion: *raw.FormatVersion,
		SlotCount:     *raw.SlotCount,
		Records:       *raw.Records,
		Files:         make([]File, len(*raw.Files)),
	}
	for i, rf := range *raw.Files {
		p := func(name string) string { return fmt.Sprintf("files[%d].%s", i, name) }
		switch {
		case rf.Name == nil:
			return nil, missing(p("name"))
		case rf.Size == nil:
			return nil, missing(p("size"))
		case rf.SHA256 == nil:
			return nil, missing(p("sha256"))
		case rf.Slots == nil:
			return nil, missing(p("slots"))
		case rf.Keys == nil:
			return nil, missing(p("keys"))
		}
		first, err := rawKey(m.FormatVersion, p("first_key"), rf.FirstKey, rf.FirstKeyB64)
		if err != nil {
			return nil, err
		}
		last, err := rawKey(m.FormatVersion, p("last_key"), rf.LastKey, rf.LastKeyB64)
		if err != nil {
			return nil, err
		}
		m.Files[i] = File{
			Name: *rf.Name, Size: *rf.Size, SHA256: *rf.SHA256, Slots: *rf.Slots,
			Keys: *rf.Keys, FirstKey: first, LastKey: last,
		}
	}
	return m, nil
}

// Validate checks every field of m against the format and lim (zero fields
// take the defaults) and returns the first problem, naming the field (e.g.
// "files[2].sha256") and wrapping one of the sentinel errors:
//
//   - format_version must be MinFormatVersion to FormatVersion
//     (ErrUnsupportedVersion);
//   - slot_count must be 16384;
//   - files must be non-empty and at most lim.MaxFiles (ErrTooLarge);
//   - each name must be a plain, local file name: non-empty, at most 255
//     bytes of valid UTF-8, no '/', '\\', NUL or control characters, not "."
//     or "..", no leading '.', not ManifestName, and unique, ignoring case
//     (ErrUnsafeName);
//   - size must be > 0 and at most lim.MaxFileBytes (ErrTooLarge);
//   - sha256 must be 64 lowercase hex digits;
//   - slots must be a valid slot range; keys must be > 0; first_key and
//     last_key must be non-empty (valid UTF-8 in version 1), in slots, and
//     in (slot, key) order (equal exactly when keys is 1);
//   - files must follow each other in (slot, key) order without overlap;
//   - records must equal the sum of the files' keys.
func (m *Manifest) Validate(lim Limits) error {
	lim = lim.withDefaults()
	if m.FormatVersion < MinFormatVersion || m.FormatVersion > FormatVersion {
		return fmt.Errorf("%w: format_version: %d is not supported (this build reads versions %d to %d)", ErrUnsupportedVersion, m.FormatVersion, MinFormatVersion, FormatVersion)
	}
	if m.SlotCount != slot.Count {
		return fmt.Errorf("%w: slot_count: %d, must be %d", ErrInvalidManifest, m.SlotCount, slot.Count)
	}
	if len(m.Files) == 0 {
		return fmt.Errorf("%w: files: empty, a dataset needs at least one file", ErrInvalidManifest)
	}
	if len(m.Files) > lim.MaxFiles {
		return fmt.Errorf("%w: files: %d files, at most %d allowed", ErrTooLarge, len(m.Files), lim.MaxFiles)
	}
	names := make(map[string]int, len(m.Files))
	var sum uint64
	var prevSlot uint16
	for i, f := range m.Files {
		p := func(name string) string { return fmt.Sprintf("files[%d].%s", i, name) }
		if err := checkName(f.Name); err != nil {
			return fmt.Errorf("%w: %s: %q %v", ErrUnsafeName, p("name"), f.Name, err)
		}
		fold := strings.ToLower(f.Name)
		if j, dup := names[fold]; dup {
			return fmt.Errorf("%w: %s: %q duplicates files[%d].name %q", ErrUnsafeName, p("name"), f.Name, j, m.Files[j].Name)
		}
		names[fold] = i
		if f.Size <= 0 {
			return fmt.Errorf("%w: %s: %d, must be > 0", ErrInvalidManifest, p("size"), f.Size)
		}
		if f.Size > lim.MaxFileBytes {
			return fmt.Errorf("%w: %s: %d bytes, above the limit of %d", ErrTooLarge, p("size"), f.Size, lim.MaxFileBytes)
		}
		if !isLowerHex(f.SHA256, 64) {
			return fmt.Errorf("%w: %s: %q is not 64 lowercase hex digits", ErrInvalidManifest, p("sha256"), f.SHA256)
		}
		r, err := slot.ParseRange(f.Slots)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalidManifest, p("slots"), err)
		}
		if f.Keys == 0 {
			return fmt.Errorf("%w: %s: 0, must be > 0", ErrInvalidManifest, p("keys"))
		}
		if f.FirstKey == "" {
			return fmt.Errorf("%w: %s: empty", ErrInvalidManifest, p("first_key"))
		}
		if f.LastKey == "" {
			return fmt.Errorf("%w: %s: empty", ErrInvalidManifest, p("last_key"))
		}
		if m.FormatVersion < 2 && !utf8.ValidString(f.FirstKey) {
			return fmt.Errorf("%w: %s: %q is not valid UTF-8 (a version 1 manifest cannot carry it)", ErrInvalidManifest, p("first_key"), f.FirstKey)
		}
		if m.FormatVersion < 2 && !utf8.ValidString(f.LastKey) {
			return fmt.Errorf("%w: %s: %q is not valid UTF-8 (a version 1 manifest cannot carry it)", ErrInvalidManifest, p("last_key"), f.LastKey)
		}
		fs, ls := slot.OfString(f.FirstKey), slot.OfString(f.LastKey)
		if !r.Contains(fs) {
			return fmt.Errorf("%w: %s: %q is in slot %d, outside slots %q", ErrInvalidManifest, p("first_key"), f.FirstKey, fs, f.Slots)
		}
		if !r.Contains(ls) {
			return fmt.Errorf("%w: %s: %q is in slot %d, outside slots %q", ErrInvalidManifest, p("last_key"), f.LastKey, ls, f.Slots)
		}
		switch c := compareKey(fs, f.FirstKey, ls, f.LastKey); {
		case c > 0:
			return fmt.Errorf("%w: %s: %q (slot %d) sorts after first_key %q (slot %d)", ErrInvalidManifest, p("last_key"), f.LastKey, ls, f.FirstKey, fs)
		case c == 0 && f.Keys != 1:
			return fmt.Errorf("%w: %s: equals first_key %q but keys is %d", ErrInvalidManifest, p("last_key"), f.LastKey, f.Keys)
		case c < 0 && f.Keys == 1:
			return fmt.Errorf("%w: %s: %q differs from first_key %q but keys is 1", ErrInvalidManifest, p("last_key"), f.LastKey, f.FirstKey)
		}
		if i > 0 {
			prev := m.Files[i-1]
			if compareKey(prevSlot, prev.LastKey, fs, f.FirstKey) >= 0 {
				return fmt.Errorf("%w: %s: %q (slot %d) does not sort after files[%d].last_key %q (slot %d); files must be in (slot, key) order without overlap",
					ErrInvalidManifest, p("first_key"), f.FirstKey, fs, i-1, prev.LastKey, prevSlot)
			}
		}
		prevSlot = ls
		var carry uint64
		sum, carry = bits.Add64(sum, f.Keys, 0)
		if carry != 0 {
			return fmt.Errorf("%w: %s: the sum of keys overflows", ErrInvalidManifest, p("keys"))
		}
	}
	if m.Records != sum {
		return fmt.Errorf("%w: records: %d, but the files' keys add up to %d", ErrInvalidManifest, m.Records, sum)
	}
	return nil
}

// compareKey orders (slot, key) pairs.
func compareKey(s1 uint16, k1 string, s2 uint16, k2 string) int {
	if s1 != s2 {
		if s1 < s2 {
			return -1
		}
		return 1
	}
	return strings.Compare(k1, k2)
}

// checkName returns why name is not a safe plain file name, or nil.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("is longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(name):
		return errors.New("is not valid UTF-8")
	case name == "." || name == ".." || strings.ContainsAny(name, `/\`):
		return errors.New("would leave the download directory")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errors.New("contains a control character")
	case name[0] == '.':
		return errors.New("starts with '.' (hidden files are not allowed)")
	case strings.EqualFold(name, ManifestName):
		return errors.New("is reserved for the manifest")
	case !filepath.IsLocal(name):
		return errors.New("would leave the download directory")
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Marshal encodes m as indented JSON with a trailing newline. It does not
// validate m; call [Manifest.Validate] first when writing a real dataset.
func (m *Manifest) Marshal() ([]byte, error) {
	out := *m
	if out.Files == nil {
		out.Files = []File{} // "files": [] rather than null
	}
	b, err := json.MarshalIndent(&out, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
