"""The agent: update jobs, policies, the orchestrator."""
