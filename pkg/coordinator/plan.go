package coordinator

import (
	"slices"

	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// planInput is everything one planning step looks at.
type planInput struct {
	// current is the assignment the status records.
	current *assignment.Table
	// members are the members the Tracker knows, live or not.
	members []membership.MemberInfo
	// rebalance asks for a new target assignment over the live members; when
	// false only handovers progress and members that died lose their slots.
	rebalance bool
	// ring tunes the target assignment.
	ring ring.Options
}

// planResult is what one planning step decided.
type planResult struct {
	// next is the assignment to record; its Epoch is current's plus one when
	// anything changed.
	next *assignment.Table
	// changed says whether next differs from current.
	changed bool
	// completed, started and cancelled count the handovers of this step.
	completed, started, cancelled int
}

// plan advances the assignment by one step. It is a pure function of its
// input, so the protocol can be tested against any sequence of events.
//
// Safety rests on three rules:
//   - A handover of slot s from A to B completes only when A can no longer
//     serve s: A is not live (an expired member has fenced itself, a released
//     one has stopped), or A has published a serving list without s together
//     with an epoch at least that of the move. The epoch matters: a serving list
//     published before A saw the move may predate a gain of s that A had begun.
//   - A slot whose owner is not live becomes unowned and may be given to a live
//     member directly, for the same reason.
//   - A slot is never given to a live member while another live member owns it:
//     the change is recorded as a pending move instead.
func plan(in planInput) (planResult, error) {
	cur := in.current
	next := cur.Clone()
	epoch := cur.Epoch + 1
	res := planResult{next: next}

	byName := make(map[string]*membership.MemberInfo, len(in.members))
	var live []string
	for i := range in.members {
		m := &in.members[i]
		byName[m.Name] = m
		if m.Live {
			live = append(live, m.Name)
		}
	}
	isLive := func(name string) bool { m := byName[name]; return m != nil && m.Live }

	// Progress pending handovers and drop owners that are gone.
	for s := range next.Owner {
		if to := next.MoveTo[s]; to != "" {
			owner := next.Owner[s]
			switch {
			case !isLive(to):
				next.MoveTo[s], next.MoveEpoch[s] = "", 0
				res.cancelled++
			case owner == "" || !isLive(owner) || released(byName[owner], s, next.MoveEpoch[s]):
				next.Owner[s], next.MoveTo[s], next.MoveEpoch[s] = to, "", 0
				res.completed++
			}
		}
		if next.MoveTo[s] == "" && next.Owner[s] != "" && !isLive(next.Owner[s]) {
			next.Owner[s] = ""
		}
	}

	if in.rebalance && len(live) > 0 {
		target, err := ring.Assign(next.Target(), live, in.ring)
		if err != nil {
			return planResult{}, err
		}
		for s, want := range target {
			switch {
			case want == next.Owner[s]:
				if next.MoveTo[s] != "" {
					next.MoveTo[s], next.MoveEpoch[s] = "", 0
					res.cancelled++
				}
			case next.Owner[s] == "":
				next.Owner[s] = want
			case next.MoveTo[s] != want:
				next.MoveTo[s], next.MoveEpoch[s] = want, epoch
				res.started++
			}
		}
	}

	if !next.Equal(cur) {
		next.Epoch = epoch
		res.changed = true
	}
	return res, nil
}

// released reports whether member m has shown that it no longer serves slot s
// and will not serve it again under a status of the move's epoch or later.
func released(m *membership.MemberInfo, s int, moveEpoch int64) bool {
	if m.ServingUnknown || m.Epoch < moveEpoch {
		return false
	}
	_, serving := slices.BinarySearch(m.Serving, s)
	return !serving
}

// needsRebalance reports whether the target assignment differs from what the
// ring package computes for the live members: a member joined or left, or a
// previous target could not be reached.
func needsRebalance(t *assignment.Table, members []membership.MemberInfo, opts ring.Options) (bool, error) {
	var live []string
	for _, m := range members {
		if m.Live {
			live = append(live, m.Name)
		}
	}
	if len(live) == 0 {
		return false, nil
	}
	current := t.Target()
	target, err := ring.Assign(current, live, opts)
	if err != nil {
		return false, err
	}
	return !slices.Equal(current, target), nil
}
