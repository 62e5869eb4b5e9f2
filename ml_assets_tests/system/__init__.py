"""The whole project: end to end, faults, pods, databases, the UI, Kubernetes, policy, the CLI, docs and load checks."""
