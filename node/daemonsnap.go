package node

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/purplerain/mesh-operator/engine/compute"
	"github.com/purplerain/mesh-operator/engine/redex"
)

// daemonSnapshotEvery is how many applied events a hosted daemon goes
// between periodic snapshots in Disk mode. A variable so tests can lower
// it.
var daemonSnapshotEvery uint64 = 4096

// snapshotFile persists one hosted daemon's newest periodic snapshot
// (Disk mode), so a restarted node resumes the daemon from it instead of
// folding the whole log again.
//
// A snapshot is written only after the shard's log is synced, so a stored
// snapshot never covers entries a crash could take back from the log; and
// the file is replaced atomically (write, sync, rename), so a crash leaves
// the previous snapshot or the new one, never a torn file.
type snapshotFile struct {
	path string
	log  *redex.Log

	// mu serialises saves; it guards only next and is never held while
	// daemon code runs (hosts call SaveSnapshot with no lock held).
	mu   sync.Mutex
	next uint64 // cursor of the newest snapshot written
}

func snapshotPath(dir, daemon string, shard uint16) string {
	return filepath.Join(dir, "daemons", fmt.Sprintf("%s.%d.snap", url.PathEscape(daemon), shard))
}

// SaveSnapshot implements compute.SnapshotStore. Two saves may arrive out
// of order; the one with the higher cursor wins.
func (s *snapshotFile) SaveSnapshot(snap *compute.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap.Cursor.Next() <= s.next {
		return nil
	}
	if err := s.log.Sync(); err != nil {
		return fmt.Errorf("sync log before daemon snapshot: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(snap.Encode())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write daemon snapshot %s: %w", s.path, err)
	}
	s.next = snap.Cursor.Next()
	return nil
}

// loadSnapshot returns the stored snapshot of a daemon instance if it can
// seed a host fed from l: same kind and config as declared now, and a
// cursor inside the log (not past its end, not before its first entry,
// which retention may have pruned). Otherwise it returns nil and why.
//
// On a followed shard (follower) a cursor past the log's end is taken too:
// only a replication resync writes one (the owner's snapshot, stored
// before the entries below its cursor arrived), and the entries it covers
// come from the owner again, so the host just waits for them. An owner's
// log never trails its own snapshots (they are written after a sync)
// unless a repair cut it, and then the snapshot covers entries that are
// gone: refused.
func loadSnapshot(path, kind string, config []byte, l *redex.Log, follower bool) (*compute.Snapshot, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, ""
		}
		return nil, err.Error()
	}
	snap, err := compute.DecodeSnapshot(b)
	if err != nil {
		return nil, err.Error()
	}
	switch next := snap.Cursor.Next(); {
	case snap.Kind != kind || !bytes.Equal(snap.Config, config):
		return nil, "declared kind or config changed"
	case next > l.NextSeq() && !follower:
		return nil, fmt.Sprintf("snapshot at %d is past the log's end %d", next, l.NextSeq())
	case next < l.FirstSeq():
		return nil, fmt.Sprintf("snapshot at %d is before the log's first entry %d", next, l.FirstSeq())
	}
	return snap, ""
}
