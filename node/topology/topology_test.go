package topology

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func sample() *Topology {
	return &Topology{
		Cluster: "demo", Epoch: 3, LeaseMillis: 2000, BaseShards: 2,
		Members: []Member{{Name: "a", Role: Active}, {Name: "b", Role: Active}, {Name: "s", Role: Standby}},
		Shards:  []Shard{{ID: 0, Owner: "a", Followers: []string{"s"}}, {ID: 1, Owner: "b", Followers: []string{"s", "a"}}},
	}
}

func TestValidTopologyPasses(t *testing.T) {
	if err := sample().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidTopologiesAreRejected(t *testing.T) {
	cases := map[string]struct {
		mutate func(*Topology)
		want   string
	}{
		"zero epoch":        {func(t *Topology) { t.Epoch = 0 }, "epoch must be at least 1"},
		"no lease":          {func(t *Topology) { t.LeaseMillis = 0 }, "leaseMillis must be positive"},
		"duplicate member":  {func(t *Topology) { t.Members = append(t.Members, Member{Name: "a", Role: Active}) }, `member "a" is listed twice`},
		"bad role":          {func(t *Topology) { t.Members[0].Role = "leader" }, `has role "leader"`},
		"duplicate shard":   {func(t *Topology) { t.Shards = append(t.Shards, Shard{ID: 0, Owner: "a"}) }, "shard 0 is listed twice"},
		"standby owner":     {func(t *Topology) { t.Shards[0].Owner = "s" }, `owner "s" is not active`},
		"unknown owner":     {func(t *Topology) { t.Shards[0].Owner = "z" }, `owner "z" is not a member`},
		"owner follows":     {func(t *Topology) { t.Shards[0].Followers = []string{"a"} }, `owner "a" is also a follower`},
		"unknown follower":  {func(t *Topology) { t.Shards[0].Followers = []string{"q"} }, `follower "q" is not a member`},
		"base shard orphan": {func(t *Topology) { t.Shards = t.Shards[:1] }, "base shard 1 has no owner"},
		"base shard drains": {func(t *Topology) { t.Shards[1].Draining = true }, "shard 1: base shards cannot drain"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			top := sample()
			tc.mutate(top)
			err := top.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestOlderEpochIsRefusedEqualIsARenewal(t *testing.T) {
	held := sample()
	older := sample()
	older.Epoch = 2
	if err := held.CheckNewer(older); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("older epoch: want ErrStaleEpoch, got %v", err)
	}
	if err := held.CheckNewer(sample()); err != nil {
		t.Fatalf("same epoch (renewal) refused: %v", err)
	}
	var none *Topology
	if err := none.CheckNewer(older); err != nil {
		t.Fatalf("first topology refused: %v", err)
	}
}

func TestOwnedAndFollowedShards(t *testing.T) {
	top := sample()
	if got := top.OwnedBy("a"); len(got) != 1 || got[0] != 0 {
		t.Fatalf("OwnedBy(a) = %v", got)
	}
	if got := top.FollowedBy("s"); len(got) != 2 {
		t.Fatalf("FollowedBy(s) = %v", got)
	}
	if got := top.FollowedBy("a"); len(got) != 1 || got[0] != 1 {
		t.Fatalf("FollowedBy(a) = %v", got)
	}
}

func TestKeyShardIsInRangeAndSpreads(t *testing.T) {
	const n = 7
	counts := make([]int, n)
	for i := range 70000 {
		s := KeyShard([]byte{byte(i), byte(i >> 8), byte(i >> 16)}, n)
		if int(s) >= n {
			t.Fatalf("shard %d out of range", s)
		}
		counts[s]++
	}
	for s, c := range counts {
		// 10000 expected per shard; a biased mapping would miss by far more.
		if c < 9000 || c > 11000 {
			t.Fatalf("shard %d got %d of 70000 keys: %v", s, c, counts)
		}
	}
	if KeyShard([]byte("k"), 1) != 0 {
		t.Fatal("one shard must take every key")
	}
}

// Added shards (ids from BaseShards on) are valid, may drain, and keep
// the JSON of a topology without draining shards unchanged (older nodes
// decode it with unknown fields disallowed).
func TestAddedAndDrainingShards(t *testing.T) {
	top := sample()
	top.Shards = append(top.Shards, Shard{ID: 2, Owner: "a", Followers: []string{"s"}}, Shard{ID: 5, Owner: "b", Draining: true})
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := top.Routable(); !slices.Equal(got, []uint16{0, 1, 2}) {
		t.Fatalf("Routable = %v, want [0 1 2]", got)
	}
	if got := top.Added(); !slices.Equal(got, []uint16{2, 5}) {
		t.Fatalf("Added = %v, want [2 5]", got)
	}
	if got := top.OwnedBy("b"); !slices.Equal(got, []uint16{1, 5}) {
		t.Fatalf("a draining shard is still owned: OwnedBy(b) = %v", got)
	}
	for range 1000 {
		if id := KeyShard([]byte(strconv.Itoa(rand.Int())), top.BaseShards); int(id) >= top.BaseShards {
			t.Fatalf("a key hashed onto added shard %d", id)
		}
	}
	plain, err := json.Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "draining") {
		t.Fatalf("a topology without draining shards mentions the field: %s", plain)
	}
	withDrain, _ := json.Marshal(top)
	var back Topology
	if err := json.Unmarshal(withDrain, &back); err != nil || !back.Shards[3].Draining {
		t.Fatalf("draining flag lost in JSON: %v %+v", err, back.Shards)
	}
}
