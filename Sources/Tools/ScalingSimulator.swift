// ScalingSimulator: an α-β model of data-parallel steps with a bucketed ring allreduce overlapped with the
// last micro-step's backward, for predicting step time and efficiency far beyond the ranks at hand.
//
// Per step on N ranks with T tokens per rank:
//  1. compute = T · FLOPs per token / (rate per rank), the rate shared when ranks outnumber cores;
//  2. the last micro-step's backward (⅔ of its compute) releases b buckets evenly; a ring allreduce of B bytes
//     costs 2 (N − 1) α + 2 (N − 1) / N · B / β; the communication thread takes buckets in order, and what
//     finishes after backward ends is exposed;
//  3. the optimizer (clip + AdamW, replicated on every rank) costs a fixed time per parameter.
// Under sharding (ZeRO): `optimizer` reduce-scatters and allgathers after backward (the bytes of one allreduce,
// exposed) and updates 1/N of the parameters; `gradients` reduce-scatters every micro-step (exposed) plus one
// allgather; `full` also gathers every unit twice per micro-step, prefetched behind compute, so only what
// exceeds the compute is exposed.
// Calibrated from cluster/bench-scaling.sh's measurements, or given a target cluster's numbers.

import Configuration
import Foundation
import Model

public struct ClusterModel: Codable, Sendable {
    /// Sustained model FLOP/s of one rank (one node, all its cores).
    public var flopsPerRank: Double
    /// α: seconds per ring hop.
    public var latency: Double
    /// β: bytes per second per link.
    public var bandwidth: Double
    public var optimizerSecondsPerParameter: Double
    /// Cores shared by the ranks (calibration on one machine); nil: one rank per node.
    public var cores: Int?

    public init(
        flopsPerRank: Double, latency: Double, bandwidth: Double, optimizerSecondsPerParameter: Double,
        cores: Int? = nil
    ) {
        self.flopsPerRank = flopsPerRank
        self.latency = latency
        self.bandwidth = bandwidth
        self.optimizerSecondsPerParameter = optimizerSecondsPerParameter
        self.cores = cores
    }
}

public struct ScalingPrediction: Codable, Sendable {
    public var ranks: Int
    public var tokensPerRank: Int
    public var accumulationSteps: Int
    public var computeS: Double
    public var commS: Double
    public var exposedCommS: Double
    public var optimizerS: Double
    public var stepS: Double
    /// tokens/s per rank over that of one rank doing the same per-rank work without communication.
    public var efficiency: Double
    /// Why efficiency is below 90%, or nil.
    public var limit: String?
}

public enum ScalingSimulator {
    public static func ringAllreduceSeconds(bytes: Double, ranks: Int, cluster: ClusterModel) -> Double {
        guard ranks > 1 else { return 0 }
        let n = Double(ranks)
        return 2 * (n - 1) * cluster.latency + 2 * (n - 1) / n * bytes / cluster.bandwidth
    }

    /// One step on `ranks` ranks, each processing `tokensPerRank` tokens in micro-batches of `microTokens`.
    /// One ring pass (a reduce-scatter or an allgather) over `bytes`: (N − 1) α + (N − 1) / N · bytes / β.
    public static func ringPassSeconds(bytes: Double, ranks: Int, cluster: ClusterModel) -> Double {
        guard ranks > 1 else { return 0 }
        let n = Double(ranks)
        return (n - 1) * cluster.latency + (n - 1) / n * bytes / cluster.bandwidth
    }

    public static func predict(
        parameters: Int, flopsPerToken: Double, ranks: Int, tokensPerRank: Int, microTokens: Int,
        bucketBytes: Int, cluster: ClusterModel, sharding: ShardingMode = .none
    ) -> ScalingPrediction {
        if sharding != .none {
            return predictSharded(
                parameters: parameters, flopsPerToken: flopsPerToken, ranks: ranks, tokensPerRank: tokensPerRank,
                microTokens: microTokens, cluster: cluster, sharding: sharding)
        }
        let share = cluster.cores.map { min(1, Double($0) / Double(ranks)) } ?? 1
        let compute = Double(tokensPerRank) * flopsPerToken / (cluster.flopsPerRank * share)
        let accumulation = max(1, tokensPerRank / max(microTokens, 1))
        let backward = 2.0 / 3.0 * compute / Double(accumulation)
        let gradientBytes = Double(4 * parameters)
        let buckets = max(1, Int((gradientBytes / Double(bucketBytes)).rounded(.up)))
        let perBucket = ringAllreduceSeconds(bytes: gradientBytes / Double(buckets), ranks: ranks, cluster: cluster)
        var finish = 0.0
        if ranks > 1 {
            for i in 1...buckets { finish = max(finish, backward * Double(i) / Double(buckets)) + perBucket }
        }
        let exposed = max(0, finish - backward)
        let optimizer = Double(parameters) * cluster.optimizerSecondsPerParameter
        let step = compute + exposed + optimizer
        let alone = Double(tokensPerRank) * flopsPerToken / cluster.flopsPerRank + optimizer
        let efficiency = alone / step
        var limit: String?
        if efficiency < 0.9 {
            let latencyPart = 2 * Double(ranks - 1) * cluster.latency * Double(buckets)
            let bandwidthPart = Double(buckets) * perBucket - latencyPart
            if share < 1 && exposed < 0.1 * step {
                limit = "ranks outnumber cores: each rank gets \(String(format: "%.2f", share)) of one"
            } else if optimizer > exposed && optimizer > 0.1 * step {
                limit =
                    "the replicated optimizer step (\(String(format: "%.0f", 100 * optimizer / step))% of the step); sharding it (ZeRO-1) would help"
            } else if accumulation == 1 && Double(buckets) * perBucket > backward {
                limit =
                    "too little compute per rank to hide the allreduce (1 micro-step; backward \(String(format: "%.3g", backward)) s vs allreduce \(String(format: "%.3g", Double(buckets) * perBucket)) s)"
            } else if latencyPart > bandwidthPart {
                limit =
                    "latency-bound: \(2 * (ranks - 1)) ring hops per bucket × \(buckets) buckets; larger buckets or a tree/hierarchical allreduce"
            } else {
                limit =
                    "bandwidth-bound: \(String(format: "%.3g", gradientBytes / 1e9)) GB of gradients per step over \(String(format: "%.3g", cluster.bandwidth / 1e9)) GB/s links"
            }
        }
        return ScalingPrediction(
            ranks: ranks, tokensPerRank: tokensPerRank, accumulationSteps: accumulation, computeS: compute,
            commS: Double(buckets) * perBucket, exposedCommS: exposed, optimizerS: optimizer, stepS: step,
            efficiency: efficiency, limit: limit)
    }

    /// Sharded modes: the same compute, communication as the mode's header comment says, a 1/N optimizer.
    static func predictSharded(
        parameters: Int, flopsPerToken: Double, ranks: Int, tokensPerRank: Int, microTokens: Int,
        cluster: ClusterModel, sharding: ShardingMode
    ) -> ScalingPrediction {
        let share = cluster.cores.map { min(1, Double($0) / Double(ranks)) } ?? 1
        let compute = Double(tokensPerRank) * flopsPerToken / (cluster.flopsPerRank * share)
        let accumulation = max(1, tokensPerRank / max(microTokens, 1))
        let pass = ringPassSeconds(bytes: Double(4 * parameters), ranks: ranks, cluster: cluster)
        var (comm, exposed) = (0.0, 0.0)
        switch sharding {
        case .none: break
        case .optimizer: (comm, exposed) = (2 * pass, 2 * pass)
        case .gradients: (comm, exposed) = (Double(accumulation + 1) * pass, Double(accumulation + 1) * pass)
        case .full:
            let gathers = 2 * Double(accumulation) * pass, scatters = Double(accumulation) * pass
            comm = gathers + scatters
            exposed = max(0, gathers - compute) + scatters
        }
        let optimizer = Double(parameters) * cluster.optimizerSecondsPerParameter / Double(ranks)
        let step = compute + exposed + optimizer
        let alone =
            Double(tokensPerRank) * flopsPerToken / cluster.flopsPerRank + Double(parameters)
            * cluster.optimizerSecondsPerParameter
        let efficiency = alone / step
        var limit: String?
        if efficiency < 0.9 {
            limit =
                share < 1 && exposed < 0.1 * step
                ? "ranks outnumber cores: each rank gets \(String(format: "%.2f", share)) of one"
                : "sharding \(sharding.rawValue) exposes \(String(format: "%.3g", exposed)) s of \(String(format: "%.3g", comm)) s of communication per step; fewer micro-steps (a larger micro_batch) or faster links"
        }
        return ScalingPrediction(
            ranks: ranks, tokensPerRank: tokensPerRank, accumulationSteps: accumulation, computeS: compute,
            commS: comm, exposedCommS: exposed, optimizerS: optimizer, stepS: step, efficiency: efficiency, limit: limit
        )
    }
}
