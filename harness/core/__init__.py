"""The pure core: what a scenario declares (topology, policies, selectors), the
state a step brings a cluster to, reachability matrices and the harness's errors.
Imports neither pytest nor a Kubernetes client."""
