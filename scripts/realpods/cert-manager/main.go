// Command controller runs cert-manager's controllers out of cluster, for the real-pods harness
// (scripts/realpods/cert-manager.sh starts it; scripts/bootstrap-cert-manager.sh builds it).
//
// cert-manager's own main package lives in a nested module of its repository
// (cmd/controller, module .../controller-binary, whose go.mod replaces the root module with
// ../../) that the Go module proxy does not serve, and its option handling is in the root
// module's internal/ packages. So this is a launcher of our own over the published root
// module's public packages: the controllers register themselves in controller.Known() when
// their packages are imported; the launcher builds the shared context from flags (defaults
// are upstream's), starts the enabled controllers and the informers, and serves
// /livez and /readyz (200 once every informer cache has synced) plus Prometheus metrics.
//
// Not here, on purpose: leader election (one instance only), the webhook and the cainjector
// (separate binaries), the Gateway API shim, the experimental CSR controllers, a config file,
// the Venafi issuer (below).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/klog/v2"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/acmechallenges"
	"github.com/cert-manager/cert-manager/pkg/controller/acmeorders"
	ingresses "github.com/cert-manager/cert-manager/pkg/controller/certificate-shim/ingresses"
	cracme "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/acme"
	crapprover "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	crvault "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/vault"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	certmetrics "github.com/cert-manager/cert-manager/pkg/controller/certificates/metrics"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	dnsutil "github.com/cert-manager/cert-manager/pkg/issuer/acme/dns/util"
	logf "github.com/cert-manager/cert-manager/pkg/logs"
	"github.com/cert-manager/cert-manager/pkg/util"

	// The issuer types the issuers and clusterissuers controllers set up.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/acme"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/vault"
)

// defaultControllers is cert-manager's default set (DefaultEnabledControllers of its
// configuration defaults), named by each controller package's own constant, less the Venafi
// issuer: its client module (github.com/Venafi/vcert/v5 v5.13.7) is not served by the proxy.
var defaultControllers = []string{
	issuers.ControllerName, clusterissuers.ControllerName, certmetrics.ControllerName,
	ingresses.ControllerName, acmeorders.ControllerName, acmechallenges.ControllerName,
	cracme.CRControllerName, crapprover.ControllerName, crca.CRControllerName,
	crselfsigned.CRControllerName, crvault.CRControllerName,
	trigger.ControllerName, issuing.ControllerName, keymanager.ControllerName,
	requestmanager.ControllerName, readiness.ControllerName, revisionmanager.ControllerName,
}

type options struct {
	kubeconfig, namespace, clusterResourceNamespace string
	healthzAddress, metricsAddress                  string
	controllers, dns01Nameservers, solverImage      string
	qps                                             float64
	burst, workers                                  int
	version                                         bool
}

func parseFlags() *options {
	o := &options{}
	fs := flag.CommandLine
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (required: this runs out of cluster)")
	fs.StringVar(&o.namespace, "namespace", "", "watch this namespace only (ClusterIssuers off); empty: all")
	fs.StringVar(&o.clusterResourceNamespace, "cluster-resource-namespace", "kube-system",
		"namespace of the Secrets that ClusterIssuers refer to")
	fs.StringVar(&o.healthzAddress, "healthz-address", "127.0.0.1:9403", "serves /livez and /readyz")
	fs.StringVar(&o.metricsAddress, "metrics-address", "127.0.0.1:9402", "serves Prometheus /metrics")
	fs.StringVar(&o.controllers, "controllers", strings.Join(defaultControllers, ","),
		"controllers to run, comma-separated")
	fs.StringVar(&o.dns01Nameservers, "dns01-recursive-nameservers", "",
		"host:port list for ACME DNS-01 checks; empty: those of /etc/resolv.conf")
	fs.StringVar(&o.solverImage, "acme-http01-solver-image",
		"quay.io/jetstack/cert-manager-acmesolver:"+util.AppVersion, "image of ACME HTTP-01 solver pods")
	fs.Float64Var(&o.qps, "kube-api-qps", 20, "queries per second to the API server")
	fs.IntVar(&o.burst, "kube-api-burst", 50, "burst of queries to the API server")
	fs.IntVar(&o.workers, "concurrent-workers", 5, "workers per controller")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	klog.InitFlags(fs)
	flag.Parse()
	return o
}

func main() {
	o := parseFlags()
	if o.version {
		v := util.VersionInfo()
		fmt.Printf("cert-manager controller %s (%s, %s)\n", v.GitVersion, v.GoVersion, v.Platform)
		return
	}
	logf.InitLogs()
	defer logf.FlushLogs()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")
	if err := run(ctx, o); err != nil {
		logf.Log.Error(err, "controller failed")
		logf.FlushLogs()
		os.Exit(1)
	}
}

func contextOptions(o *options) (controller.ContextOptions, error) {
	if o.kubeconfig == "" {
		return controller.ContextOptions{}, errors.New("--kubeconfig is required")
	}
	nameservers := dnsutil.RecursiveNameservers
	if o.dns01Nameservers != "" {
		nameservers = strings.Split(o.dns01Nameservers, ",")
	}
	// upstream's default solver resources (10m/64Mi requested, 100m/64Mi limit)
	return controller.ContextOptions{
		Kubeconfig:         o.kubeconfig,
		KubernetesAPIQPS:   float32(o.qps),
		KubernetesAPIBurst: o.burst,
		Namespace:          o.namespace,
		ACMEOptions: controller.ACMEOptions{
			HTTP01SolverImage:                 o.solverImage,
			HTTP01SolverResourceRequestCPU:    resource.MustParse("10m"),
			HTTP01SolverResourceRequestMemory: resource.MustParse("64Mi"),
			HTTP01SolverResourceLimitsCPU:     resource.MustParse("100m"),
			HTTP01SolverResourceLimitsMemory:  resource.MustParse("64Mi"),
			ACMEHTTP01SolverRunAsNonRoot:      true,
			DNS01Nameservers:                  nameservers,
			DNS01CheckRetryPeriod:             10 * time.Second,
			DNS01CheckAuthoritative:           true,
		},
		SchedulerOptions: controller.SchedulerOptions{MaxConcurrentChallenges: 60},
		IssuerOptions: controller.IssuerOptions{
			ClusterResourceNamespace:        o.clusterResourceNamespace,
			ClusterIssuerAmbientCredentials: true,
		},
		IngressShimOptions: controller.IngressShimOptions{
			DefaultIssuerKind:                 "Issuer",
			DefaultIssuerGroup:                cmapi.GroupName,
			DefaultAutoCertificateAnnotations: []string{"kubernetes.io/tls-acme"},
			GatewayAPIExtraProtocols:          sets.New[string](),
		},
		CertificateOptions: controller.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	}, nil
}

func enabledControllers(o *options) ([]string, error) {
	known := controller.Known()
	var enabled []string
	for _, name := range strings.Split(o.controllers, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if _, ok := known[name]; !ok {
			return nil, fmt.Errorf("unknown controller %q", name)
		}
		// a namespaced instance cannot watch cluster-scoped issuers
		if o.namespace != "" && name == clusterissuers.ControllerName {
			continue
		}
		enabled = append(enabled, name)
	}
	slices.Sort(enabled)
	return enabled, nil
}

// synced says whether every informer a factory's WaitForCacheSync reports has synced.
func synced[K comparable](m map[K]bool) bool {
	for _, ok := range m {
		if !ok {
			return false
		}
	}
	return true
}

func run(rootCtx context.Context, o *options) error {
	log := logf.FromContext(rootCtx)
	v := util.VersionInfo()
	log.Info("starting cert-manager controller", "version", v.GitVersion, "go_version", v.GoVersion)

	copts, err := contextOptions(o)
	if err != nil {
		return err
	}
	enabled, err := enabledControllers(o)
	if err != nil {
		return err
	}
	// bind both listeners first: a taken port fails the start instead of a later goroutine
	lc := net.ListenConfig{}
	healthzLn, err := lc.Listen(rootCtx, "tcp", o.healthzAddress)
	if err != nil {
		return fmt.Errorf("healthz address: %w", err)
	}
	metricsLn, err := lc.Listen(rootCtx, "tcp", o.metricsAddress)
	if err != nil {
		return fmt.Errorf("metrics address: %w", err)
	}

	g, gctx := errgroup.WithContext(rootCtx)
	factory, err := controller.NewContextFactory(gctx, copts)
	if err != nil {
		return err
	}
	cctx, err := factory.Build()
	if err != nil {
		return err
	}
	log.Info("enabled controllers", "controllers", enabled)
	known := controller.Known()
	for _, name := range enabled {
		c, err := known[name](factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", name, err)
		}
		g.Go(func() error { return c.Run(o.workers, gctx) })
	}

	informers := cctx.SharedInformerFactory.Certmanager().V1()
	cctx.Metrics.SetupCertificateCollector(informers.Certificates().Lister())
	cctx.Metrics.SetupIssuerCollector(informers.Issuers().Lister())
	if slices.Contains(enabled, clusterissuers.ControllerName) {
		cctx.Metrics.SetupClusterIssuerCollector(informers.ClusterIssuers().Lister())
	}
	cctx.Metrics.SetupACMECollector(cctx.SharedInformerFactory.Acme().V1().Challenges().Lister())
	metricsServer := cctx.Metrics.NewServer(metricsLn)

	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "informer caches not synced", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	healthzServer := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	for _, s := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{healthzServer, healthzLn}, {metricsServer, metricsLn}} {
		g.Go(func() error {
			if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return s.srv.Shutdown(shutdownCtx) //nolint:contextcheck // the group's context is done
		})
	}

	cctx.SharedInformerFactory.Start(gctx.Done())
	cctx.KubeSharedInformerFactory.Start(gctx.Done())
	cctx.HTTP01ResourceMetadataInformersFactory.Start(gctx.Done())
	g.Go(func() error {
		if synced(cctx.SharedInformerFactory.WaitForCacheSync(gctx.Done())) &&
			synced(cctx.KubeSharedInformerFactory.WaitForCacheSync(gctx.Done())) &&
			synced(cctx.HTTP01ResourceMetadataInformersFactory.WaitForCacheSync(gctx.Done())) {
			ready.Store(true)
			log.Info("informer caches synced: ready")
		}
		return nil
	})

	err = g.Wait()
	cctx.HTTP01ResourceMetadataInformersFactory.Shutdown()
	cctx.KubeSharedInformerFactory.Shutdown()
	cctx.SharedInformerFactory.Shutdown()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("control loops exited")
	return nil
}
