package agent

import clientv3 "go.etcd.io/etcd/client/v3"

// NewEtcdClient returns an etcd client for o, as the agent makes it, for
// the commands that read or write the cluster store without running the
// agent (`netagent status`, `netagent config`). It does not contact etcd.
func NewEtcdClient(o EtcdOptions) (*clientv3.Client, error) { return newEtcdClient(o) }
