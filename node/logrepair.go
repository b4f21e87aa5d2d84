package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/purplerain/mesh-operator/engine/redex"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
)

// openStoredLogs (Disk mode) opens every shard log already in the storage
// directory, so damage is found at start and stops the node there instead
// of failing a later topology push for one shard. A log Open refuses with
// redex.ErrCorrupt (damage that is not a torn write) is cut back with
// redex.Repair only when storage.repairCorruptLogs says so, and what that
// dropped is logged at error level; without it New fails with a message
// that names the option. The logs opened stay open: the topology that
// arrives next needs them anyway.
func (n *Node) openStoredLogs(cfg *nodeconfig.Config) error {
	if cfg == nil || cfg.Storage.Mode != "Disk" {
		return nil
	}
	dir := cfg.Storage.Dir
	des, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage.dir: %w", err)
	}
	for _, de := range des {
		// The adapter keeps shard n's log in <dir>/shard-n.
		rest, ok := strings.CutPrefix(de.Name(), "shard-")
		if !ok || !de.IsDir() {
			continue
		}
		id, err := strconv.ParseUint(rest, 10, 16)
		if err != nil {
			continue
		}
		_, err = n.logs.Log(uint16(id))
		if err == nil {
			continue
		}
		if !errors.Is(err, redex.ErrCorrupt) {
			return fmt.Errorf("storage.dir: shard %d log: %w", id, err)
		}
		if !cfg.Storage.RepairCorruptLogs {
			return fmt.Errorf("storage.dir: shard %d log: %w; to cut it back to the last good record before the damage "+
				"(dropping every record after it), start once with storage.repairCorruptLogs: true "+
				"(docs/operations.md, \"Repairing a corrupt log\")", id, err)
		}
		o := storeOptions(cfg).Log
		o.Name = de.Name()
		o.Dir = filepath.Join(dir, de.Name())
		o.Logger = n.logger
		rep, rerr := redex.Repair(o)
		if rerr != nil {
			return fmt.Errorf("storage.repairCorruptLogs: shard %d log: %w (the log was corrupt: %v)", id, rerr, err)
		}
		n.logger.Error("storage.repairCorruptLogs: cut a corrupt shard log; the records after the damage are gone",
			"shard", id, "next", rep.Next, "dropped_records", rep.DroppedFrames, "dropped_segments", rep.DroppedSegments,
			"dropped_bytes", rep.DroppedBytes, "segment", rep.Segment, "offset", rep.Offset, "damage", rep.Reason)
		if _, err := n.logs.Log(uint16(id)); err != nil {
			return fmt.Errorf("storage.dir: shard %d log after repair: %w", id, err)
		}
	}
	return nil
}
