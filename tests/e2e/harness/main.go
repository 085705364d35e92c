// Command harness is the e2e test driver: it plays the kubelets of Cloudify VMs (the joiner), the
// ReplicaSet controller (there is no kube-controller-manager), and runs the scenario, printing a
// timeline. run.sh starts the processes; this program only talks to them over loopback.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	var (
		kubeconfig = flag.String("kubeconfig", "", "admin kubeconfig")
		provCfg    = flag.String("provider-config", "", "the provider's config YAML (templates are read from it)")
		simURL     = flag.String("cloudify-url", "", "simulator URL (default: from the provider config)")
		password   = flag.String("cloudify-password", "admin", "Cloudify password")
		token      = flag.String("cloudify-token", os.Getenv("CLOUDIFY_TOKEN"), "Cloudify token (instead of the password)")
		manager    = flag.Bool("manager", false, "a real Cloudify Manager instead of the simulator (issue 19): lists restricted to the configured groups' deployments, faults through the tier blueprints' fault switch")
		summary    = flag.String("summary", "", "also write the per-phase summary as tab-separated values to this file")
		mode       = flag.String("mode", "ca", "ca: cluster-autoscaler drives scaling; no-ca: the harness scales through Cloudify's REST API (used when CA cannot be built)")
		pool       = flag.String("pool", "e2e-pool/workers", "group scaled by pending pods")
		poolMin    = flag.Int("pool-min", 1, "min size of --pool")
		poolLabel  = flag.String("pool-label", "e2e.autoscaler-cloudify/pool=small", "label of --pool's template that pods select")
		zero       = flag.String("zero", "e2e-zero/batch", "group at 0 with a template")
		poolObject = flag.String("pool-object", "", "the CloudifyNodePool serving --pool, deleted by the pool-delete phase (issue 22; that phase runs only when --phases names it)")
		zeroLabel  = flag.String("zero-label", "e2e.autoscaler-cloudify/pool=zero", "label of --zero's template that pods select")
		timeline   = flag.String("timeline", "", "also write the timeline to this file")
		phases     = flag.String("phases", "baseline,scale-up,scale-down,from-zero,failure,outage,drain,price,startup-options,ca-restart,oob-scale-in,outage-nodes,final", "phases to run (CA-only phases are skipped in the no-CA mode)")
		priceCheap = flag.String("price-cheap", "e2e-cheap/workers", "the cheaper of two pools with the same template label")
		priceDear  = flag.String("price-dear", "e2e-dear/workers", "the dearer pool")
		priceLabel = flag.String("price-label", "e2e.autoscaler-cloudify/pool=priced", "template label of both priced pools")
		slowGroup  = flag.String("slow-group", "e2e-slow/boot", "group with per-group options whose Nodes boot slowly")
		slowLabel  = flag.String("slow-label", "e2e.autoscaler-cloudify/pool=slow", "template label of --slow-group")
		slowBoot   = flag.Duration("slow-boot", 20*time.Second, "how long --slow-group's Nodes stay NotReady after registering")
		caLogPath  = flag.String("ca-log", "", "cluster-autoscaler's log file (error lines, loops, decisions)")
		caRestart  = flag.String("ca-restart", "", "command restarting cluster-autoscaler with the same flags (space-separated)")
		metricsURL = flag.String("provider-metrics", "", "the provider's /metrics URL (server-side gRPC time per phase)")
		slow       = flag.Float64("timeout-scale", 1, "multiply every timeout")
		joinOnly   = flag.Bool("join-only", false, "only run the joiner until interrupted")
		joinMode   = flag.String("join-mode", "provider-id", "provider-id: Nodes join with kubelet --provider-id; external: as kubelet --cloud-provider=external (tainted, no providerID), the provider's node controller initializes and deletes them (issue 15, nodelife.go)")
		inspect    = flag.String("inspect", "", "command prefix querying the provider over gRPC, e.g. 'autoscaler-cloudify inspect --cloud-config F' (space-separated; empty: skip)")
	)
	flag.Parse()
	externalJoin = *joinMode == "external" // issue 15
	x := extras{priceCheap: *priceCheap, priceDear: *priceDear, priceLabel: *priceLabel, slowGroup: *slowGroup, slowLabel: *slowLabel,
		slowBoot: *slowBoot, caLog: *caLogPath, caRestart: strings.Fields(*caRestart), metricsURL: *metricsURL,
		token: *token, manager: *manager, summary: *summary, poolObject: *poolObject}
	os.Exit(run(*kubeconfig, *provCfg, *simURL, *password, *mode, *pool, *poolMin, *poolLabel, *zero, *zeroLabel, *timeline, *phases, *slow, *joinOnly, strings.Fields(*inspect), x))
}

// extras are the inputs of the CA-only phases.
type extras struct {
	priceCheap, priceDear, priceLabel string
	slowGroup, slowLabel              string
	slowBoot                          time.Duration
	caLog                             string
	caRestart                         []string
	metricsURL                        string
	token                             string // Cloudify token (instead of the password)
	manager                           bool   // a real Cloudify Manager (issue 19)
	summary                           string // TSV copy of the summary table
	poolObject                        string // CloudifyNodePool serving the pool (issue 22)
}

// externalJoin: --join-mode=external (issue 15, node lifecycle; see nodelife.go).
var externalJoin bool

func kv(s string) map[string]string {
	k, v, _ := strings.Cut(s, "=")
	return map[string]string{k: v}
}

func run(kubeconfig, provCfg, simURL, password, mode, pool string, poolMin int, poolLabel, zero, zeroLabel, timelinePath, phases string, slow float64, joinOnly bool, inspect []string, x extras) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	cfg, err := loadProviderConfig(provCfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 2
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 2
	}
	rc.QPS, rc.Burst = 50, 100
	kube := kubernetes.NewForConfigOrDie(rc)
	if simURL == "" {
		simURL = cfg.Cloudify[0].URL
	}
	cfy := &cloudifyClient{base: strings.TrimRight(simURL, "/"), tenant: cfg.Cloudify[0].Tenant, user: cfg.Cloudify[0].Username,
		password: password, token: x.token, http: &http.Client{Timeout: 10 * time.Second}, manager: x.manager}
	if cfy.tenant == "" {
		cfy.tenant = "default_tenant"
	}
	if cfy.user == "" {
		cfy.user = "admin"
	}
	groups := map[string]groupTemplate{}
	for id, g := range cfg.NodeGroups.Groups {
		groups[id] = g.Template
		cfy.deployments = append(cfy.deployments, strings.SplitN(id, "/", 2)[0])
	}
	sort.Strings(cfy.deployments)
	tl := newTimeline(timelinePath)
	j := &Joiner{kube: kube, cfy: cfy, groups: groups, tl: tl, interval: 500 * time.Millisecond,
		instances: map[string]nodeInstance{}, seen: map[string]string{}, names: map[string]string{},
		joinedAt: map[string]time.Time{}, stopped: map[string]bool{},
		bootDelay: map[string]time.Duration{x.slowGroup: x.slowBoot}}
	// --- issue 15 (node lifecycle, nodelife.go): external join mode and its timing tracker.
	if externalJoin {
		j.external = true
		j.refresh, j.minAge = controllerTiming(provCfg)
		j.life = newNodeLife(j, tl)
		go j.life.run(ctx)
	}
	// --- end issue 15
	if joinOnly {
		j.Run(ctx)
		return 0
	}
	go j.Run(ctx)
	go replicaSets.run(ctx, kube, tl)
	w := newWatcher(kube, cfy, tl)
	go w.run(ctx)

	s := &scenario{kube: kube, cfy: cfy, joiner: j, w: w, tl: tl, withCA: mode == "ca",
		pool: pool, poolMin: poolMin, poolSel: kv(poolLabel), zero: zero, zeroSel: kv(zeroLabel), slow: slow, inspect: inspect,
		priceCheap: x.priceCheap, priceDear: x.priceDear, priceSel: kv(x.priceLabel), slowGroup: x.slowGroup, slowSel: kv(x.slowLabel),
		slowBoot: x.slowBoot, caLog: &caLog{path: x.caLog}, caRestart: x.caRestart, metricsURL: x.metricsURL,
		created: map[string]time.Time{}, poolObject: x.poolObject}
	for id := range groups {
		s.allGroups = append(s.allGroups, id)
	}
	// clean: a CA error-level line naming our RPCs, groups or instances during the phase fails it
	// (the failure and price phases inject failures, so CA reports errors there by design).
	type phase struct {
		name   string
		fn     func(context.Context) error
		caOnly bool
		clean  bool
	}
	all := []phase{{"baseline", s.baseline, false, true}, {"scale-up", s.scaleUp, false, true}, {"scale-down", s.scaleDown, false, true},
		{"from-zero", s.fromZero, false, true}, {"failure", s.failedScaleOut, false, false},
		{"outage", s.managerOutage, true, true}, {"drain", s.drainScaleDown, true, true}, {"price", s.priceExpander, true, false},
		{"startup-options", s.startupOptions, true, true}, {"ca-restart", s.caRestartMidScaleUp, true, true},
		// The node controller's phases (nodelife.go, external join mode): they change Cloudify
		// behind CA's back or stop kubelets, so CA may rightly complain.
		{"oob-scale-in", s.outOfBandScaleIn, false, false}, {"outage-nodes", s.nodeControllerOutage, false, false},
		{"final", s.finalChecks, false, true},
		// Deletes the CloudifyNodePool serving --pool (pooldelete.go); only when asked for.
		{"pool-delete", s.poolDelete, true, true}}
	want := map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		want[strings.TrimSpace(p)] = true
	}
	passed, failed, skipped := 0, 0, 0
	var stats []*phaseStat
	var results []string
	stop := false
	for _, p := range all {
		if !want[p.name] || stop || (p.caOnly && !s.withCA) {
			skipped++
			results = append(results, fmt.Sprintf("SKIP %s", p.name))
			continue
		}
		st := &phaseStat{name: p.name, start: time.Now()}
		s.cur = st
		m0, merr := scrapeGRPC(ctx, s.metricsURL)
		logOff := s.caLog.mark()
		err := p.fn(ctx)
		st.end = time.Now()
		if m1, err1 := scrapeGRPC(ctx, s.metricsURL); merr == nil && err1 == nil && s.metricsURL != "" {
			st.grpc = m1.minus(m0)
			st.measured = true
		}
		stats = append(stats, st)
		if err == nil && p.clean && s.withCA {
			if lines := s.caErrorsNamingUs(logOff); len(lines) > 0 {
				err = stepErr{fmt.Sprintf("%d cluster-autoscaler error line(s) naming our RPCs, groups or instances:\n  %s", len(lines), strings.Join(lines, "\n  "))}
			}
		}
		if err != nil {
			failed++
			results = append(results, fmt.Sprintf("FAIL %s (%.0fs): %v", p.name, st.end.Sub(st.start).Seconds(), err))
			stop = true // later phases build on this one's end state
			continue
		}
		passed++
		results = append(results, fmt.Sprintf("PASS %s (%.0fs)", p.name, st.end.Sub(st.start).Seconds()))
	}
	_ = cfy.clearFaults(context.Background())
	fmt.Println()
	fmt.Println("==================== e2e timeline (mode " + mode + ") ====================")
	fmt.Println(tl.Dump())
	fmt.Println("==================== e2e timeline summary ====================")
	fmt.Print(summaryTable(stats))
	if x.summary != "" {
		if err := os.WriteFile(x.summary, []byte(summaryTSV(stats)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "harness: summary:", err)
		}
	}
	fmt.Println("==================== e2e phases ====================")
	for _, r := range results {
		fmt.Println(r)
	}
	fmt.Printf("harness: phases passed=%d failed=%d skipped=%d\n", passed, failed, skipped)
	if failed > 0 {
		return 1
	}
	return 0
}
