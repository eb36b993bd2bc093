"""The platform's Pulumi policy pack (run by `pulumi preview --policy-pack policies`).

`rules` holds each rule as a plain function over Kubernetes objects (dicts), `kube` the shared
readers of those objects, `pack` the pulumi-policy glue; `__main__` serves the pack.
"""
