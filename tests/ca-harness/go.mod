module autoscaler-cloudify/tests/ca-harness

go 1.24
