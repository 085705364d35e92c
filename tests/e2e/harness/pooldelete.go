package main

// The pool-delete phase (issue 22, item 5): the scaled group is a CloudifyNodePool (--pool-object);
// deleting it must end with no Node, no deployment and no pool left. The provider serves a
// deleting pool with min = max = 0, so CA scales its remaining Nodes down; the pool controller
// waits until none is registered, uninstalls the deployment, deletes it and removes its finalizer.
// The joiner keeps playing the kubelets throughout, so a VM that goes takes its Node NotReady and
// the node controller deletes that Node, as on a real cluster.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// poolsPath is the CloudifyNodePool collection (cluster-scoped, the chart's CRD).
const poolsPath = "/apis/autoscaler.cloudify.io/v1alpha1/cloudifynodepools"

// poolObject is what the phase reads of a CloudifyNodePool.
type poolObject struct {
	Status struct {
		Phase      string `json:"phase"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
			Reason string `json:"reason"`
		} `json:"conditions"`
	} `json:"status"`
}

// getPool returns the pool, or nil once the API server answers 404.
func (s *scenario) getPool(ctx context.Context) (*poolObject, error) {
	raw, err := s.kube.Discovery().RESTClient().Get().AbsPath(poolsPath, s.poolObject).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p poolObject
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("CloudifyNodePool %s: %w", s.poolObject, err)
	}
	return &p, nil
}

// poolDelete: kubectl delete cnp -> CA scales the pool's Nodes down (max 0) -> Nodes gone ->
// uninstall -> deployment deleted -> finalizer removed -> the pool is gone.
func (s *scenario) poolDelete(ctx context.Context) error {
	s.tl.Phase("14 pool deleted")
	if s.poolObject == "" {
		return stepErr{"--pool-object names no CloudifyNodePool to delete"}
	}
	dep, _ := split(s.pool)
	mark := s.w.execCount()
	before, err := groupNodes(ctx, s.kube, s.pool)
	if err != nil {
		return err
	}
	if err := s.kube.Discovery().RESTClient().Delete().AbsPath(poolsPath, s.poolObject).Do(ctx).Error(); err != nil {
		return fmt.Errorf("deleting CloudifyNodePool %s: %w", s.poolObject, err)
	}
	s.tl.Event("harness: CloudifyNodePool %s deleted (%d Node(s) of %s registered)", s.poolObject, len(before), s.pool)
	// The reasons of the Deleting condition, in the order they appeared: they show the controller
	// waited for the Nodes and uninstalled before it deleted the deployment.
	var reasons []string
	watch := func() (bool, error) {
		p, err := s.getPool(ctx)
		if err != nil || p == nil {
			return p == nil && err == nil, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == "Deleting" && c.Status == "True" && (len(reasons) == 0 || reasons[len(reasons)-1] != c.Reason) {
				reasons = append(reasons, c.Reason)
				s.tl.Event("pool %s: phase %s, Deleting=%s", s.poolObject, p.Status.Phase, c.Reason)
			}
		}
		return false, nil
	}
	if len(before) > 0 {
		// CA's scale-down of a group served with max 0 (the only way its Nodes go).
		if _, err := s.waitExecution(ctx, mark, dep, false, 120*time.Second, "cluster-autoscaler DeleteNodes on the deleting pool"); err != nil {
			return err
		}
	}
	if err := s.waitFor(ctx, 180*time.Second, "no Node of "+s.pool+" registered", func() (bool, error) {
		if _, err := watch(); err != nil {
			return false, err
		}
		n, err := groupNodes(ctx, s.kube, s.pool)
		return len(n) == 0, err
	}); err != nil {
		return err
	}
	s.tl.Event("no Node of %s left", s.pool)
	if err := s.waitFor(ctx, 300*time.Second, "CloudifyNodePool "+s.poolObject+" gone (uninstalled, deployment deleted, finalizer removed)", watch); err != nil {
		return err
	}
	s.tl.Event("CloudifyNodePool %s gone; Deleting reasons seen: %s", s.poolObject, strings.Join(reasons, " -> "))
	if !slices.Contains(reasons, "Uninstalling") {
		return stepErr{fmt.Sprintf("the pool went without its deployment being uninstalled first (Deleting reasons seen: %v)", reasons)}
	}
	if err := s.waitFor(ctx, 30*time.Second, "deployment "+dep+" gone from Cloudify (404)", func() (bool, error) {
		return s.cfy.deploymentGone(ctx, dep)
	}); err != nil {
		return err
	}
	// No Node of the deployment at all, joined by the harness or not.
	left, err := s.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "cloudify.co/deployment=" + dep})
	if err != nil {
		return err
	}
	if len(left.Items) > 0 {
		return stepErr{fmt.Sprintf("%d Node(s) of deployment %s left behind, e.g. %s", len(left.Items), dep, left.Items[0].Name)}
	}
	s.tl.Event("deployment %s gone from Cloudify; no Node of it left", dep)
	return nil
}
