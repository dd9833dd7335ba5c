# policies/default/*.cedar, rule for rule, in Rego.

# agents.cedar
forbids contains "agent-must-be-active" if input.principal.state != "active"

forbids contains "agents-never-admin" if input.action == "admin"

forbids contains "no-secrets-in-arguments" if input.context.risk.secret_in_args

# environments.cedar
forbids contains "prototype-never-production" if {
	input.context.environment.agent == "prototype"
	input.context.environment.resource == "production"
}

# data.cedar
in_task_scope if {
	input.resource.type == "upstream"
	input.resource.name in input.context.task.upstreams
}

in_task_scope if {
	input.resource.type == "tool"
	input.resource.upstream in input.context.task.upstreams
	input.resource.name in input.context.task.tools
}

in_task_scope if {
	input.resource.type == "dataset"
	input.resource.upstream in input.context.task.upstreams
	input.resource.name in input.context.task.datasets
}

read_scope if in_task_scope

read_scope if {
	input.resource.type == "mcp_resource"
	input.resource.upstream in input.context.task.upstreams
	input.resource.declared
}

read_scope if {
	input.resource.type == "prompt"
	input.resource.upstream in input.context.task.upstreams
	input.resource.name in input.context.task.prompts
}

permits contains "reads-within-task-scope" if {
	input.action == "read"
	read_scope
}

declared_dataset if input.resource.name in input.context.task.datasets

forbids contains "regulated-data-needs-declaration" if {
	input.resource.type == "dataset"
	input.resource.sensitivity == "regulated"
	not declared_dataset
}

# writes.cedar
permits contains "writes-within-task-scope" if {
	input.action == "write"
	input.context.environment.resource != "production"
	in_task_scope
}

permits contains "production-writes-need-approval" if {
	input.action == "write"
	input.context.environment.resource == "production"
	in_task_scope
}

permits contains "destructive-needs-two-approvals" if {
	input.action == "destructive"
	in_task_scope
}

# tasks.cedar
task_action if input.action in {"task.start", "task.delegate"}

permits contains "task-start-and-delegate" if {
	task_action
	input.context.task
}

upstreams_allowed if {
	input.context.task
	every u in input.context.task.upstreams {
		u in input.principal.allowed_upstreams
	}
}

forbids contains "task-upstreams-must-be-allowed" if {
	task_action
	not upstreams_allowed
}

forbids contains "delegation-depth-limit" if {
	input.action == "task.delegate"
	input.context.delegation.depth > 2
}
