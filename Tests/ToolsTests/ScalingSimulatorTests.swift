// The α-β scaling model: the ring formula, overlap, and the reasons it gives when efficiency falls.
import Testing
import Tools

@Suite struct ScalingSimulatorTests {
    let fast = ClusterModel(flopsPerRank: 1e12, latency: 5e-6, bandwidth: 12.5e9, optimizerSecondsPerParameter: 1e-10)

    @Test func ringAllreduceCost() {
        #expect(ScalingSimulator.ringAllreduceSeconds(bytes: 1e9, ranks: 1, cluster: fast) == 0)
        // 2 ranks: 2 hops of latency and one buffer's worth of traffic.
        #expect(
            abs(ScalingSimulator.ringAllreduceSeconds(bytes: 1e9, ranks: 2, cluster: fast) - (2 * 5e-6 + 1e9 / 12.5e9))
                < 1e-12)
        // Many ranks: the bandwidth term tends to 2 B / β, the latency term grows linearly.
        let t = ScalingSimulator.ringAllreduceSeconds(bytes: 1e9, ranks: 1000, cluster: fast)
        #expect(abs(t - (2 * 999 * 5e-6 + 2 * 0.999 * 1e9 / 12.5e9)) < 1e-9)
    }

    @Test func oneRankIsFullyEfficientAndOverlapHidesCommunication() {
        let one = ScalingSimulator.predict(
            parameters: 1_000_000, flopsPerToken: 6e6, ranks: 1, tokensPerRank: 100_000,
            microTokens: 10_000, bucketBytes: 1 << 20, cluster: fast)
        #expect(one.efficiency == 1 && one.exposedCommS == 0 && one.limit == nil)
        // Plenty of backward to hide 4 MB of gradients: only about the last bucket shows.
        let two = ScalingSimulator.predict(
            parameters: 1_000_000, flopsPerToken: 6e6, ranks: 2, tokensPerRank: 100_000,
            microTokens: 10_000, bucketBytes: 1 << 20, cluster: fast)
        let lastBucket = ScalingSimulator.ringAllreduceSeconds(bytes: 1e6, ranks: 2, cluster: fast)
        #expect(two.exposedCommS <= lastBucket * 1.01 && two.efficiency > 0.99)
    }

    @Test func limitsAreNamed() {
        // Little compute per rank (a fast node), one micro-step, huge model: communication cannot hide.
        let petaflop = ClusterModel(
            flopsPerRank: 1e15, latency: 5e-6, bandwidth: 12.5e9, optimizerSecondsPerParameter: 0)
        let starved = ScalingSimulator.predict(
            parameters: 7_000_000_000, flopsPerToken: 4.2e10, ranks: 1024, tokensPerRank: 4096,
            microTokens: 4096, bucketBytes: 25 << 20, cluster: petaflop)
        #expect(
            starved.efficiency < 0.9 && starved.limit?.hasPrefix("too little compute") == true,
            "\(starved.limit ?? "nil")")
        let slowLinks = ClusterModel(flopsPerRank: 1e12, latency: 1e-6, bandwidth: 1e8, optimizerSecondsPerParameter: 0)
        let bound = ScalingSimulator.predict(
            parameters: 100_000_000, flopsPerToken: 6e8, ranks: 8, tokensPerRank: 2000,
            microTokens: 1000, bucketBytes: 25 << 20, cluster: slowLinks)
        #expect(bound.limit?.hasPrefix("bandwidth-bound") == true, "\(bound.limit ?? "nil")")
        let highLatency = ClusterModel(
            flopsPerRank: 1e12, latency: 0.05, bandwidth: 1e12, optimizerSecondsPerParameter: 0)
        let latent = ScalingSimulator.predict(
            parameters: 100_000_000, flopsPerToken: 6e8, ranks: 64, tokensPerRank: 2000,
            microTokens: 1000, bucketBytes: 1 << 20, cluster: highLatency)
        #expect(latent.limit?.hasPrefix("latency-bound") == true, "\(latent.limit ?? "nil")")
        let shared = ClusterModel(
            flopsPerRank: 1e12, latency: 1e-9, bandwidth: 1e15, optimizerSecondsPerParameter: 0, cores: 2)
        let over = ScalingSimulator.predict(
            parameters: 1000, flopsPerToken: 6e6, ranks: 4, tokensPerRank: 10_000,
            microTokens: 1000, bucketBytes: 1 << 20, cluster: shared)
        #expect(abs(over.efficiency - 0.5) < 1e-6 && over.limit?.contains("cores") == true)
    }
}
