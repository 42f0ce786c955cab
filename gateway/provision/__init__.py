"""Provisioned targets: ephemeral accounts and temporary elevation, made and taken away
agentlessly over SSH with the target's provisioner key, as a durable state machine."""
