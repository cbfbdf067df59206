"""The local runtime (`vigil local up`): the second shell around the pure core.

It runs a Model's units as local `vigil serve` processes in simulated zones
and drives them with the same core the kopf operator uses: `world` describes
the local processes as the Nodes, Pods and Deployments the core reads,
`deployments` plays the Deployment controller (scale, surge-first rollout),
`units` supervises the processes (start, health, restart, drain, kill),
`control` runs one reconcile loop and one autoscaler loop per Model,
`proxy` is the client endpoint, `api` the control API that `vigil local
apply/get/delete/zone` talk to, `store` keeps the Models as the API server
would (schema and CEL checks from the CRD), `documents` reads Model YAML and
`table` prints kubectl-style tables.
"""
