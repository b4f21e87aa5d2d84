package daemons

import (
	"encoding/json"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/compute"
)

// Task operations carried in a tasks event's "op" field.
const (
	OpCreate   = "create"
	OpRename   = "rename"
	OpComplete = "complete"
	OpDelete   = "delete"
)

// TaskStatus is a task's lifecycle state.
type TaskStatus string

const (
	TaskPending   TaskStatus = "pending"
	TaskCompleted TaskStatus = "completed"
)

// Task is one task of the tasks model.
type Task struct {
	ID        uint64     `json:"id"`
	Title     string     `json:"title"`
	Status    TaskStatus `json:"status"`
	CreatedNs int64      `json:"createdNs"`
	UpdatedNs int64      `json:"updatedNs"`
}

// TaskEvent is the payload of a tasks event. NowNs defaults to the log
// entry's timestamp.
type TaskEvent struct {
	Op    string `json:"op"`
	ID    uint64 `json:"id"`
	Title string `json:"title,omitempty"`
	NowNs int64  `json:"nowNs,omitempty"`
}

// Tasks is Net's CRUD task model: create inserts (or replaces) a pending
// task, rename and complete update an existing task and are no-ops for an
// unknown id (the log is the source of truth), delete removes it. Unknown
// ops are skipped for forward compatibility.
type Tasks struct {
	name  string
	state tasksState
}

type tasksState struct {
	Tasks     map[uint64]*Task `json:"tasks"`
	Unknown   uint64           `json:"unknown"`
	Malformed uint64           `json:"malformed"`
}

// NewTasks is the tasks kind's factory. It takes no config.
func NewTasks(name string, config []byte) (compute.MeshDaemon, error) {
	var none struct{}
	if err := decodeConfig(config, &none); err != nil {
		return nil, err
	}
	return &Tasks{name: name, state: tasksState{Tasks: map[uint64]*Task{}}}, nil
}

func (t *Tasks) Name() string   { return t.name }
func (t *Tasks) Stateful() bool { return true }

// Get returns task id, if present.
func (t *Tasks) Get(id uint64) (Task, bool) {
	x, ok := t.state.Tasks[id]
	if !ok {
		return Task{}, false
	}
	return *x, true
}

func (t *Tasks) Process(ev compute.Event) ([][]byte, error) {
	var te TaskEvent
	if err := json.Unmarshal(ev.Payload, &te); err != nil {
		t.state.Malformed++
		return nil, nil
	}
	now := te.NowNs
	if now == 0 {
		now = ev.Time
	}
	switch te.Op {
	case OpCreate:
		t.state.Tasks[te.ID] = &Task{ID: te.ID, Title: te.Title, Status: TaskPending, CreatedNs: now, UpdatedNs: now}
	case OpRename:
		if x, ok := t.state.Tasks[te.ID]; ok {
			x.Title, x.UpdatedNs = te.Title, now
		}
	case OpComplete:
		if x, ok := t.state.Tasks[te.ID]; ok {
			x.Status, x.UpdatedNs = TaskCompleted, now
		}
	case OpDelete:
		delete(t.state.Tasks, te.ID)
	default:
		t.state.Unknown++
	}
	return nil, nil
}

func (t *Tasks) Snapshot() ([]byte, error) { return json.Marshal(&t.state) }

func (t *Tasks) Restore(b []byte) error {
	var st tasksState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("daemons: tasks restore: %w", err)
	}
	if st.Tasks == nil {
		st.Tasks = map[uint64]*Task{}
	}
	t.state = st
	return nil
}
