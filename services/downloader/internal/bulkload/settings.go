package bulkload

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// settingsFile, under DataDir, keeps the runtime settings changed with
// UpdateSettings, so they survive a restart.
const settingsFile = "settings.json"

// savedSetting is one runtime setting changed through the API, with the
// configured value (flag) it overrode: after a restart the saved value
// applies as long as the configuration still says Configured; once the
// operator configures another value, the configuration wins (it is the
// newer decision) and the saved value is dropped.
type savedSetting struct {
	Value      uint64 `json:"value"`
	Configured uint64 `json:"configured"`
}

type savedSettings struct {
	MaxDownloads        *savedSetting `json:"max_downloads,omitempty"`
	MaxDownloadsPerNode *savedSetting `json:"max_downloads_per_node,omitempty"`
	Bandwidth           *savedSetting `json:"bandwidth_bytes_per_second,omitempty"`
}

func (m *Manager) settingsPath() string { return filepath.Join(m.opts.DataDir, settingsFile) }

// loadSettings reads the saved runtime settings and returns the settings
// to start with: the configured ones, overridden by what was saved over
// the same configured value. With etcd the settings are the leader's and
// are read when a term begins (Lead); a replica starts from its flags.
func (m *Manager) loadSettings() (Settings, error) {
	if m.ha != nil {
		s, _ := m.restoreSettings(savedSettings{}, false)
		return s, nil
	}
	path := m.settingsPath()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		s, _ := m.restoreSettings(savedSettings{}, false)
		return s, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("runtime settings %s: %w", path, err)
	}
	var saved savedSettings
	if err := json.Unmarshal(b, &saved); err != nil {
		return Settings{}, fmt.Errorf("runtime settings %s: %w (remove the file to start from the configured settings)", path, err)
	}
	s, saved := m.restoreSettings(saved, true)
	m.saved = saved
	return s, nil
}

// restoreSettings returns the settings in force given what was saved: the
// configured ones, overridden by each saved value whose configured value
// is still this replica's; saved values over another configuration are
// dropped from the returned savedSettings.
func (m *Manager) restoreSettings(saved savedSettings, logIt bool) (Settings, savedSettings) {
	s := Settings{MaxDownloads: m.opts.MaxDownloads, MaxDownloadsPerNode: m.opts.MaxDownloadsPerNode,
		BandwidthBytesPerSecond: m.opts.BandwidthBytesPerSecond}
	restore := func(name string, p **savedSetting, configured uint64, set func(uint64)) {
		v := *p
		if v == nil {
			return
		}
		if v.Configured != configured {
			if logIt {
				m.log.Warn("a runtime setting was saved over another configured value; the configuration wins",
					"setting", name, "saved", v.Value, "configured_then", v.Configured, "configured_now", configured)
			}
			*p = nil
			return
		}
		if logIt {
			m.log.Info("runtime setting restored", "setting", name, "value", v.Value, "configured", configured)
		}
		set(v.Value)
	}
	restore("max_downloads", &saved.MaxDownloads, uint64(m.opts.MaxDownloads), func(v uint64) { s.MaxDownloads = max(int(v), 1) })
	restore("max_downloads_per_node", &saved.MaxDownloadsPerNode, uint64(m.opts.MaxDownloadsPerNode), func(v uint64) { s.MaxDownloadsPerNode = max(int(v), 1) })
	restore("bandwidth_bytes_per_second", &saved.Bandwidth, m.opts.BandwidthBytesPerSecond, func(v uint64) { s.BandwidthBytesPerSecond = v })
	return s, saved
}

// writeSettings saves s durably: a temp file, synced, renamed over the
// old one, the directory synced.
func writeSettings(path string, s savedSettings) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// UpdateSettings changes the fields of u that are set; running downloads
// over a lowered cap finish, new ones wait. The change is saved (see
// savedSetting) before it applies: when it cannot be saved, nothing
// changes and the error says so.
func (m *Manager) UpdateSettings(u SettingsUpdate) (Settings, error) {
	if !m.leading() {
		return Settings{}, ErrNotLeading
	}
	m.settingsMu.Lock()
	defer m.settingsMu.Unlock()
	g, n := m.sched.caps()
	saved := m.saved
	if u.MaxDownloads != nil {
		if *u.MaxDownloads < 1 {
			return Settings{}, rpcerr.InvalidField("max_downloads", "%d, must be at least 1", *u.MaxDownloads)
		}
		g = *u.MaxDownloads
		saved.MaxDownloads = &savedSetting{Value: uint64(g), Configured: uint64(m.opts.MaxDownloads)}
	}
	if u.MaxDownloadsPerNode != nil {
		if *u.MaxDownloadsPerNode < 1 {
			return Settings{}, rpcerr.InvalidField("max_downloads_per_node", "%d, must be at least 1", *u.MaxDownloadsPerNode)
		}
		n = *u.MaxDownloadsPerNode
		saved.MaxDownloadsPerNode = &savedSetting{Value: uint64(n), Configured: uint64(m.opts.MaxDownloadsPerNode)}
	}
	if u.BandwidthBytesPerSecond != nil {
		saved.Bandwidth = &savedSetting{Value: *u.BandwidthBytesPerSecond, Configured: m.opts.BandwidthBytesPerSecond}
	}
	if m.ha != nil {
		if err := m.ha.saveSettings(saved); err != nil {
			return Settings{}, err
		}
	} else if err := writeSettings(m.settingsPath(), saved); err != nil {
		return Settings{}, fmt.Errorf("%w: the settings were not changed: saving them to %s failed: %v", rpcerr.ErrUnavailable, m.settingsPath(), err)
	}
	m.saved = saved
	m.sched.setCaps(g, n)
	if u.BandwidthBytesPerSecond != nil {
		m.bw.set(*u.BandwidthBytesPerSecond)
	}
	s := m.localSettings()
	where := m.settingsPath()
	if m.ha != nil {
		where = "etcd " + m.ha.settingsKey
	}
	m.log.Info("bulk-load settings updated", "max_downloads", s.MaxDownloads, "max_downloads_per_node", s.MaxDownloadsPerNode,
		"bandwidth_bytes_per_second", s.BandwidthBytesPerSecond, "saved_in", where)
	return s, nil
}
