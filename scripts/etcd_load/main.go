// etcd_load: N concurrent clients putting random keys into etcd for a duration, after a
// warmup; prints one JSON object with the throughput and latency percentiles.
//
// Built offline against Debian's golang-etcd-server-dev (etcd 3.4 clientv3) in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off go build -o etcd_load .
//
// Clients share --connections gRPC connections (each one a clientv3.Client), dealt
// round-robin over the endpoints, as etcd's own benchmark tool does with --conns/--clients.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

type summary struct {
	Driver          string             `json:"driver"`
	Endpoints       []string           `json:"endpoints"`
	Clients         int                `json:"clients"`
	Connections     int                `json:"connections"`
	ValueSizeBytes  int                `json:"value_size_bytes"`
	Keys            int                `json:"keys"`
	Count           int                `json:"count"`
	Errors          int                `json:"errors"`
	FirstError      string             `json:"first_error,omitempty"`
	ElapsedSeconds  float64            `json:"elapsed_seconds"`
	OpsPerSecond    float64            `json:"throughput_ops_per_second"`
	LatencyMs       map[string]float64 `json:"latency_ms"`
	WarmupSeconds   float64            `json:"warmup_seconds"`
	DurationSeconds float64            `json:"duration_seconds"`
}

type clientResult struct {
	latencies  []time.Duration
	errors     int
	firstError string
	last       time.Time
}

func percentile(sorted []time.Duration, fraction float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(fraction*float64(len(sorted))+0.5) - 1
	if index < 0 {
		index = 0
	}
	if index >= len(sorted) {
		index = len(sorted) - 1
	}
	return float64(sorted[index].Microseconds()) / 1000.0
}

func main() {
	endpointList := flag.String("endpoints", "127.0.0.1:2379", "comma-separated host:port list")
	clients := flag.Int("clients", 256, "concurrent clients, each with one put in flight")
	connections := flag.Int("connections", 32, "gRPC connections the clients share")
	duration := flag.Duration("duration", 15*time.Second, "measured time after warmup")
	warmup := flag.Duration("warmup", 2*time.Second, "traffic before measuring, not counted")
	valueSize := flag.Int("value-size", 100, "bytes per value")
	keys := flag.Int("keys", 100000, "distinct keys key:000000000000..")
	timeout := flag.Duration("request-timeout", 10*time.Second, "per put")
	seed := flag.Int64("seed", 0, "key choice seed")
	flag.Parse()

	endpoints := strings.Split(*endpointList, ",")
	if *connections > *clients {
		*connections = *clients
	}
	kvs := make([]*clientv3.Client, *connections)
	for index := range kvs {
		client, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{endpoints[index%len(endpoints)]},
			DialTimeout: 5 * time.Second,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "etcd_load: connect: %v\n", err)
			os.Exit(1)
		}
		defer client.Close()
		kvs[index] = client
	}
	value := strings.Repeat("v", *valueSize)
	start := time.Now()
	measureStart := start.Add(*warmup)
	deadline := measureStart.Add(*duration)
	results := make([]clientResult, *clients)
	var group sync.WaitGroup
	for index := 0; index < *clients; index++ {
		group.Add(1)
		go func(index int) {
			defer group.Done()
			random := rand.New(rand.NewSource(*seed + int64(index)))
			kv := kvs[index%len(kvs)]
			result := &results[index]
			for {
				began := time.Now()
				if !began.Before(deadline) {
					return
				}
				key := fmt.Sprintf("key:%012d", random.Intn(*keys))
				ctx, cancel := context.WithTimeout(context.Background(), *timeout)
				_, err := kv.Put(ctx, key, value)
				cancel()
				ended := time.Now()
				if began.Before(measureStart) {
					continue
				}
				result.last = ended
				if err != nil {
					result.errors++
					if result.firstError == "" {
						result.firstError = err.Error()
					}
					continue
				}
				result.latencies = append(result.latencies, ended.Sub(began))
			}
		}(index)
	}
	group.Wait()

	var all []time.Duration
	out := summary{
		Driver:          "etcd_load (Go, etcd clientv3 from golang-etcd-server-dev)",
		Endpoints:       endpoints,
		Clients:         *clients,
		Connections:     *connections,
		ValueSizeBytes:  *valueSize,
		Keys:            *keys,
		WarmupSeconds:   warmup.Seconds(),
		DurationSeconds: duration.Seconds(),
	}
	last := measureStart
	for _, result := range results {
		all = append(all, result.latencies...)
		out.Errors += result.errors
		if out.FirstError == "" {
			out.FirstError = result.firstError
		}
		if result.last.After(last) {
			last = result.last
		}
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	out.Count = len(all) + out.Errors
	out.ElapsedSeconds = last.Sub(measureStart).Seconds()
	if out.ElapsedSeconds > 0 {
		out.OpsPerSecond = float64(len(all)) / out.ElapsedSeconds
	}
	out.LatencyMs = map[string]float64{
		"p50":   percentile(all, 0.50),
		"p90":   percentile(all, 0.90),
		"p99":   percentile(all, 0.99),
		"p99_9": percentile(all, 0.999),
		"max":   percentile(all, 1.0),
	}
	encoded, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(encoded))
}
