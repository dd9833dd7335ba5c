# Warden's three-valued decision in Rego, for the benchmark and equality gate: `permits` and
# `forbids` are the ids of the policies that hold; `data.quorum` maps each @approval policy to its
# quorum. Rule bodies never read the approval state, so one pass decides `needs_approval`.
package warden

import rego.v1

counted contains id if {
	some id in permits
	not data.quorum[id]
}

counted contains id if {
	some id in permits
	q := data.quorum[id]
	input.context.approval.granted
	input.context.approval.approvers >= q
}

default decision := "deny"

decision := "allow" if {
	count(forbids) == 0
	count(counted) > 0
}

decision := "needs_approval" if {
	count(forbids) == 0
	count(counted) == 0
	count(permits) > 0
}

quorum := max({q | some id in permits; q := data.quorum[id]} | {1})

result := {"decision": decision, "quorum": quorum, "permits": permits, "forbids": forbids}

outside_hours(from, to) if input.context.time.hour < from

outside_hours(from, to) if input.context.time.hour > to
