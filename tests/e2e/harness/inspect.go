package main

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"
)

// checkRegistration asks the provider over gRPC (mTLS, with CA's own cloud-config, through
// `autoscaler-cloudify inspect`) what CA would ask it: NodeGroupNodes(gid) must list exactly the
// provider ids of the group's joined Nodes (CA matches instances to Nodes byte for byte on that), and
// NodeGroupForNode must map every such Node back to gid.
func (s *scenario) checkRegistration(ctx context.Context, gid string) error {
	if len(s.inspect) == 0 {
		return nil
	}
	run := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		full := append(append([]string{}, s.inspect[1:]...), args...)
		out, err := exec.CommandContext(cctx, s.inspect[0], full...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v: %s", s.inspect[0], strings.Join(full, " "), err, truncate(string(out), 300))
		}
		return string(out), nil
	}
	var nodeIDs, instIDs []string
	err := s.waitFor(ctx, 20*time.Second, "provider NodeGroupNodes("+gid+") == providerIDs of the group's Nodes", func() (bool, error) {
		nodes, err := groupNodes(ctx, s.kube, gid)
		if err != nil {
			return false, err
		}
		nodeIDs = nodeIDs[:0]
		for _, n := range nodes {
			nodeIDs = append(nodeIDs, n.Spec.ProviderID)
		}
		out, err := run("nodes", gid)
		if err != nil {
			return false, err
		}
		instIDs = instIDs[:0]
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 1 && strings.HasPrefix(f[0], "cloudify://") {
				instIDs = append(instIDs, f[0])
			}
		}
		sort.Strings(nodeIDs)
		sort.Strings(instIDs)
		return strings.Join(nodeIDs, ",") == strings.Join(instIDs, ","), nil
	})
	if err != nil {
		s.tl.Event("provider listed %v, Nodes have %v", instIDs, nodeIDs)
		return err
	}
	nodes, err := groupNodes(ctx, s.kube, gid)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		out, err := run("group-for", "--provider-id", n.Spec.ProviderID, "--name", n.Name)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(strings.TrimSpace(out), gid+" ") && strings.TrimSpace(out) != gid {
			msg := fmt.Sprintf("NodeGroupForNode(%s) answered %q, want %s", n.Name, strings.TrimSpace(out), gid)
			s.tl.Event("FAIL: %s", msg)
			return stepErr{msg}
		}
	}
	s.tl.Event("provider (gRPC over mTLS): NodeGroupNodes(%s) lists exactly the %d joined Nodes' providerIDs; NodeGroupForNode maps each back to %s",
		gid, len(nodes), gid)
	return nil
}

// showNodes puts the provider's NodeGroupNodes answer for gid into the timeline (what CA sees of
// the group, e.g. after a failed execution: instance states and error info).
func (s *scenario) showNodes(ctx context.Context, gid string) {
	if len(s.inspect) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	full := append(append([]string{}, s.inspect[1:]...), "nodes", gid)
	out, err := exec.CommandContext(cctx, s.inspect[0], full...).CombinedOutput()
	if err != nil {
		s.tl.Event("provider NodeGroupNodes(%s): error %v", gid, err)
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		s.tl.Event("provider NodeGroupNodes(%s): %s", gid, strings.TrimSpace(l))
	}
}
