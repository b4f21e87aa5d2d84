package redex

import "errors"

// diskLog is the disk-mode mirror of a Log.
// TODO(issue 3): segment files; in progress.
type diskLog struct{}

type testHooks struct{}

func (l *Log) openDisk() error { return errors.New("redex: disk mode not implemented yet") }
func (d *diskLog) write(l *Log, seq uint64, ts int64, flags Flags, crc uint32, p []byte, n int) error {
	return nil
}
func (d *diskLog) writeBatch(l *Log, first uint64, ts int64, ps [][]byte) error { return nil }
func (d *diskLog) syncLocked(l *Log) error                                      { return nil }
func (d *diskLog) closeLocked(l *Log) error                                     { return nil }
func (d *diskLog) retainLocked(l *Log) error                                    { return nil }
func (d *diskLog) stopWorker()                                                  {}
