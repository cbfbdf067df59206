"""The cluster shell: `vigil operator` against Kubernetes. kopf handlers and
indexes (`handlers`, the controller's `ClusterWorld`), the API client
(`kube`), leader election and its write fence (`election`, `fence`), and the
process that ties them together (`runner`)."""
