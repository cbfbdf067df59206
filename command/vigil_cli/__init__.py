"""The `vigil` command: parses flags, reads the environment once into typed
settings, and hands them to the unit (`vigil_inference`), the operator
(`vigil_operator.cluster.handlers` under `vigil_operator.cluster.runner`) or the local
runtime (`vigil_operator.local`), each imported only when its command runs."""
