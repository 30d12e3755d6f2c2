"""The in-pod side of a RunPod job: ``hubferry agent`` (runner.py) drives the trl training command
(trl_train.py) and talks to the orchestrator through its callbacks (callbacks.py); docs/pod-agent.md
is the contract.

Nothing heavy is imported here: the agent itself needs no torch, only its training command does.
"""
