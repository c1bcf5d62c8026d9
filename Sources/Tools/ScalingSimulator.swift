// ScalingSimulator: an α-β model of data-parallel steps that prices the collectives the trainer really issues,
// for predicting step time and efficiency far beyond the ranks at hand.
//
// Per step on N ranks with T tokens per rank:
//  1. compute = T · FLOPs per token / (rate per rank), the rate shared when ranks outnumber cores;
//  2. communication = the sum over the step's collectives of count × hops × (α + largest piece / β): a ring
//     (OpenMPI's choice for these sizes) takes N − 1 hops per pass, and every hop moves the largest piece some
//     rank holds, so a collective is as slow as its most loaded rank. The collectives, as implemented:
//     - none: the gradient buckets' allreduces (2 passes of ⌈B/N⌉), overlapped with the last micro-step's
//       backward (⅔ of its compute): what finishes after backward ends is exposed;
//     - optimizer: one reduce-scatter and one allgather of the whole buffer (pieces ⌈P/N⌉), exposed;
//     - gradients: a reduce-scatter of every unit every micro-step, then an allgather of every unit, exposed;
//     - full: an allgather of every unit before its forward and its backward (except where one of the two
//       slots still holds it: the last two units of forward serve backward, the first two of backward the
//       next forward), prefetched behind compute, and every unit's reduce-scatter every micro-step;
//     a unit's pieces are ⌈S/N⌉ under the balanced layout and, under the flat layout of earlier builds, each
//     rank's overlap with [r·⌈P/N⌉, (r+1)·⌈P/N⌉), up to ⌈P/N⌉;
//     what a communication thread issues beside compute (none's buckets, full's prefetches) moves its bytes
//     (1 + γ)× slower: the lab measures γ at each world size, `full` with and without --no-prefetch being the
//     same collectives on the two threads (1.5× on 2 lab hosts, about 1× on 3 and 4); with --no-prefetch
//     `full` gathers each unit on the compute thread, all of it exposed;
//  3. the optimizer (clip + AdamW) costs a fixed time per parameter it updates (all, or 1/N sharded).
// Calibrated from a lab run (cluster/lab-scaling.sh: α and β fitted to its communication per step) or from
// cluster/bench-scaling.sh, or given a target cluster's numbers.

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
    /// Seconds per collective call, beside α per hop (a TCP flow that starts from idle, the call's set-up).
    public var callLatency: Double = 0
    /// γ: a collective issued on a communication thread beside compute (none's buckets, full's prefetched
    /// gathers) moves its bytes (1 + γ)× slower than one on the compute thread (measured in the lab as `full`
    /// against `full --no-prefetch`, the same collectives on the other thread; 0 where the two cost the same).
    public var threadSlowdown: Double = 0

    public init(
        flopsPerRank: Double, latency: Double, bandwidth: Double, optimizerSecondsPerParameter: Double,
        cores: Int? = nil, callLatency: Double = 0
    ) {
        self.callLatency = callLatency
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

/// How sharding `gradients` and `full` split a unit over the ranks.
public enum UnitLayout: String, Sendable, CaseIterable {
    /// ⌈S/N⌉ of every unit on every rank (this build).
    case balanced
    /// One flat range of ⌈P/N⌉ per rank over the whole model (builds before balanced units).
    case flat
}

/// One kind of collective as the trainer issues it in a step.
public struct Collective: Sendable {
    public var name: String
    /// How many the step issues.
    public var count: Int
    /// The algorithm's steps per collective (a ring pass: N − 1).
    public var hops: Int
    /// The largest piece a hop moves (every rank waits for it).
    public var largestBytes: Double

    public var cost: CommunicationCost {
        CommunicationCost(
            calls: Double(count), hops: Double(count * hops), bytes: Double(count * hops) * largestBytes)
    }
}

/// Communication time as a linear cost: calls × per-call latency + hops × α + bytes / β, so a calibration
/// fits the three rates by least squares.
public struct CommunicationCost: Sendable {
    public var calls = 0.0, hops = 0.0, bytes = 0.0

    public func seconds(_ c: ClusterModel) -> Double { calls * c.callLatency + hops * c.latency + bytes / c.bandwidth }

    public static func + (a: CommunicationCost, b: CommunicationCost) -> CommunicationCost {
        CommunicationCost(calls: a.calls + b.calls, hops: a.hops + b.hops, bytes: a.bytes + b.bytes)
    }

    public static func * (k: Double, a: CommunicationCost) -> CommunicationCost {
        CommunicationCost(calls: k * a.calls, hops: k * a.hops, bytes: k * a.bytes)
    }
}

/// A step's communication: everything as `comm_s` counts it, and the part `full` prefetches behind compute.
public struct StepCommunication: Sendable {
    public var collectives: [Collective]
    /// All of it, summed per collective (as the trainer's comm_s is; no two share the link).
    public var total: CommunicationCost
    /// `full`'s gathers, which hide behind compute as far as it lasts.
    public var prefetched: CommunicationCost
    /// What a communication thread issues beside compute: none's buckets, full's prefetched gathers.
    public var threaded: CommunicationCost

    /// All of it, in seconds: the threaded part's bytes (1 + γ)× slower.
    public func seconds(_ c: ClusterModel) -> Double {
        total.seconds(c) + c.threadSlowdown * threaded.bytes / c.bandwidth
    }

    /// The prefetched gathers, in seconds (all of them threaded).
    public func prefetchedSeconds(_ c: ClusterModel) -> Double {
        prefetched.seconds(c) + c.threadSlowdown * prefetched.bytes / c.bandwidth
    }
}

public enum ScalingSimulator {
    /// The collectives of one step: `units` are the model's unit sizes in parameters (embedding, blocks, heads).
    public static func communication(
        units: [Int], ranks: Int, accumulation: Int, sharding: ShardingMode, bucketBytes: Int,
        layout: UnitLayout = .balanced, prefetch: Bool = true
    ) -> StepCommunication {
        guard ranks > 1 else {
            return StepCommunication(collectives: [], total: .init(), prefetched: .init(), threaded: .init())
        }
        let parameters = units.reduce(0, +), hops = ranks - 1
        func ceil(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
        // The largest piece of each unit any rank holds, in bytes.
        let flatShare = ceil(parameters, ranks)
        var start = 0
        let largest: [Double] = units.map { size in
            defer { start += size }
            guard layout == .flat else { return Double(4 * ceil(size, ranks)) }
            var most = 0, r = start / flatShare
            while r * flatShare < start + size {
                most = max(most, min((r + 1) * flatShare, start + size) - max(r * flatShare, start))
                r += 1
            }
            return Double(4 * most)
        }
        func unitPass(_ name: String, _ u: Int, times: Int) -> Collective {
            Collective(name: name, count: times, hops: hops, largestBytes: largest[u])
        }
        func step(
            _ collectives: [Collective], prefetched: [Collective] = [], threaded: Bool = false
        )
            -> StepCommunication
        {
            let total = collectives.map(\.cost).reduce(CommunicationCost(), +)
            let ahead = prefetched.map(\.cost).reduce(CommunicationCost(), +)
            return StepCommunication(
                collectives: collectives, total: total, prefetched: ahead, threaded: threaded ? total : ahead)
        }
        switch sharding {
        case .none:
            // Each bucket: a reduce-scatter and an allgather of even pieces (BucketedAllreduce's ring).
            let bytes = 4 * parameters, buckets = max(1, ceil(bytes, bucketBytes))
            let piece = Double(ceil(ceil(bytes, buckets), ranks))
            return step(
                [
                    Collective(name: "bucket reduce-scatter", count: buckets, hops: hops, largestBytes: piece),
                    Collective(name: "bucket allgather", count: buckets, hops: hops, largestBytes: piece),
                ], threaded: true)
        case .optimizer:
            let piece = Double(4 * flatShare)
            return step([
                Collective(name: "reduce-scatter (all)", count: 1, hops: hops, largestBytes: piece),
                Collective(name: "allgather (all)", count: 1, hops: hops, largestBytes: piece),
            ])
        case .gradients:
            return step(
                units.indices.map { unitPass("reduce-scatter (unit)", $0, times: accumulation) }
                    + units.indices.map { unitPass("allgather (unit)", $0, times: 1) })
        case .full:
            let gathers = fullGathers(units: units.count, accumulation: accumulation)
            let gather = units.indices.map { unitPass("allgather (unit)", $0, times: gathers[$0]) }
            let scatter = units.indices.map { unitPass("reduce-scatter (unit)", $0, times: accumulation) }
            return prefetch ? step(gather + scatter, prefetched: gather) : step(gather + scatter)
        }
    }

    /// How often each unit is gathered in a step under `full`: ShardedUnits' two slots replayed (forward
    /// 0…U−1, backward U−1…0, per micro-step; a slot still holding the unit asked for is used as it is).
    static func fullGathers(units: Int, accumulation: Int) -> [Int] {
        var slots: [Int?] = [nil, nil], gathers = [Int](repeating: 0, count: units)
        func use(_ u: Int) {
            if slots[u % 2] != u { (gathers[u], slots[u % 2]) = (gathers[u] + 1, u) }
        }
        for _ in 0..<accumulation {
            for u in 0..<units { use(u) }
            for u in (0..<units).reversed() { use(u) }
        }
        return gathers
    }

    public static func ringAllreduceSeconds(bytes: Double, ranks: Int, cluster: ClusterModel) -> Double {
        guard ranks > 1 else { return 0 }
        let n = Double(ranks)
        return 2 * (n - 1) * cluster.latency + 2 * (n - 1) / n * bytes / cluster.bandwidth
    }

    /// One step on `ranks` ranks, each processing `tokensPerRank` tokens in micro-batches of `microTokens`.
    /// `units`: the model's unit sizes (nil: one unit of all the parameters); `layout`: how `gradients` and
    /// `full` split them.
    public static func predict(
        parameters: Int, flopsPerToken: Double, ranks: Int, tokensPerRank: Int, microTokens: Int,
        bucketBytes: Int, cluster: ClusterModel, sharding: ShardingMode = .none, units: [Int]? = nil,
        layout: UnitLayout = .balanced, prefetch: Bool = true
    ) -> ScalingPrediction {
        let accumulation = max(1, tokensPerRank / max(microTokens, 1))
        let issued = communication(
            units: units ?? [parameters], ranks: ranks, accumulation: accumulation, sharding: sharding,
            bucketBytes: bucketBytes, layout: layout, prefetch: prefetch)
        if sharding != .none {
            return predictSharded(
                parameters: parameters, flopsPerToken: flopsPerToken, ranks: ranks, tokensPerRank: tokensPerRank,
                accumulation: accumulation, cluster: cluster, sharding: sharding, communication: issued)
        }
        let share = cluster.cores.map { min(1, Double($0) / Double(ranks)) } ?? 1
        let compute = Double(tokensPerRank) * flopsPerToken / (cluster.flopsPerRank * share)
        let backward = 2.0 / 3.0 * compute / Double(accumulation)
        let gradientBytes = Double(4 * parameters)
        let buckets = issued.collectives.first?.count ?? 1
        let perBucket = issued.seconds(cluster) / Double(buckets)
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

    /// Sharded modes: the same compute, the mode's collectives (exposed but for `full`'s prefetched gathers,
    /// which hide behind compute as far as it lasts), a 1/N optimizer.
    static func predictSharded(
        parameters: Int, flopsPerToken: Double, ranks: Int, tokensPerRank: Int, accumulation: Int,
        cluster: ClusterModel, sharding: ShardingMode, communication: StepCommunication
    ) -> ScalingPrediction {
        let share = cluster.cores.map { min(1, Double($0) / Double(ranks)) } ?? 1
        let compute = Double(tokensPerRank) * flopsPerToken / (cluster.flopsPerRank * share)
        let comm = communication.seconds(cluster)
        let gathers = communication.prefetchedSeconds(cluster)
        let exposed = max(0, gathers - compute) + (comm - gathers)
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
