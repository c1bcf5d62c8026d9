// Calibrating the scaling simulator: the α-β model's rates fitted to a cluster/bench-scaling.sh run (compute
// and optimizer from the 1-rank weak result, β from the raw 25 MB allreduce, α from the small-message one),
// then every measured configuration predicted again, so the fit is checked against what it was fitted on.
// What this is not: the model itself (ScalingSimulator.swift) or the command (Launcher/SimulateCommand.swift).
import Configuration
import Foundation
import Model

public struct CalibrationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum ScalingCalibration {
    /// A fit to a rate-limited lab run (cluster/lab-scaling.sh's lab.json): per world size, the per-call
    /// latency, α, β and γ from its runs' communication per step (`full-noprefetch`, the same collectives as
    /// `full` all on the compute thread, pins γ), priced with the collectives as implemented
    /// (least squares on the relative error); the compute rate from the `none` runs, the optimizer from what is
    /// left of their steps. `log` gets the fits, then every run measured against predicted; the model returned
    /// has the largest world size's links, and the link rate comes back too, so β reads as a share of it.
    public static func fitLab(
        path: String, log: (String) -> Void
    ) throws -> (
        ClusterModel, linkBytesPerS: Double, validation: [[String: Any]]
    ) {
        guard let data = FileManager.default.contents(atPath: path),
            let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let results = root["results"] as? [[String: Any]],
            let link = (root["rate_bits_per_s"] as? NSNumber)?.doubleValue
        else { throw CalibrationError("\(path): not a lab.json written by cluster/lab-scaling.sh") }
        // The run config as the lab ran it (run_config), or the file it names.
        let config =
            try root["run_config"].map {
                try JSONDecoder().decode(RunConfig.self, from: JSONSerialization.data(withJSONObject: $0))
            } ?? RunConfig.load(path: root["config"] as? String ?? "")
        let layout = ParameterLayout(config: config.model)
        let units = layout.units.map(\.count)
        let flops = ParameterLayout.flopsPerToken(config.model, seqLen: config.train.seqLen)
        let cores = Int("\(root["cores"] ?? "")") ?? ProcessInfo.processInfo.activeProcessorCount
        let tokensPerRank = config.train.microBatch * config.train.seqLen  // one micro-step per rank
        func number(_ r: [String: Any], _ k: String) -> Double? { (r[k] as? NSNumber)?.doubleValue }
        struct Run {
            let mode: ShardingMode, prefetch: Bool, ranks: Int, comm: Double, compute: Double, exposed: Double
            let step: Double
            /// As lab-scaling.sh names it: the sharding mode, `full-noprefetch` for full with --no-prefetch.
            var label: String { mode.rawValue + (prefetch ? "" : "-noprefetch") }
        }
        let runs: [Run] = results.compactMap { r in
            guard let label = r["mode"] as? String,
                let mode = ShardingMode(rawValue: label.replacingOccurrences(of: "-noprefetch", with: "")),
                let n = number(r, "ranks"), let comm = number(r, "comm_s"), let compute = number(r, "compute_s"),
                let exposed = number(r, "exposed_comm_s"), let step = number(r, "step_s")
            else { return nil }
            return Run(
                mode: mode, prefetch: !label.hasSuffix("-noprefetch"), ranks: Int(n), comm: comm, compute: compute,
                exposed: exposed, step: step)
        }
        let none = runs.filter { $0.mode == .none }
        guard !none.isEmpty, runs.allSatisfy({ $0.ranks > 1 && $0.comm > 0 && $0.compute > 0 }) else {
            throw CalibrationError(
                "\(path): needs runs on 2 or more ranks with communication and compute, sharding none among them")
        }
        // comm = calls·α_call + hops·α + bytes/β + threaded bytes·γ/β per run, linear in the four: fit them to
        // make every run's predicted over measured communication near 1 (least squares on the relative error;
        // a negative rate is dropped). At one world size hops are calls × (N − 1), so α folds into α_call.
        let issued = runs.map { r in
            ScalingSimulator.communication(
                units: units, ranks: r.ranks, accumulation: 1, sharding: r.mode,
                bucketBytes: Int(config.train.bucketMB * 1_048_576), prefetch: r.prefetch)
        }
        let terms = issued.map { [$0.total.calls, $0.total.hops, $0.total.bytes, $0.threaded.bytes] }
        let width = 4
        func solve(_ use: [Bool], _ chosen: [Int]) -> [Double] {
            let raw = chosen.map { i in zip(terms[i], use).map { $1 ? $0 / runs[i].comm : 0 } }
            // Columns scaled to 1 (bytes are 10^7 times calls), so the pivots compare like with like.
            let columns = (0..<width).map { i in raw.map { abs($0[i]) }.max().map { $0 > 0 ? $0 : 1 } ?? 1 }
            let rows = raw.map { row in (0..<width).map { row[$0] / columns[$0] } }
            var a = [[Double]](repeating: [Double](repeating: 0, count: width), count: width)
            var b = [Double](repeating: 0, count: width)
            for row in rows {
                for i in 0..<width {
                    b[i] += row[i]
                    for j in 0..<width { a[i][j] += row[i] * row[j] }
                }
            }
            for i in 0..<width where !use[i] {
                (a[i], b[i]) = ([Double](repeating: 0, count: width), 0)
                a[i][i] = 1
            }
            // Gaussian elimination with partial pivoting on the normal equations; a pivot that is rounding noise
            // (hops proportional to calls at one world size, no threaded bytes) drops its term.
            let scale = a.joined().map(abs).max() ?? 0
            for c in 0..<width {
                let p = (c..<width).max { abs(a[$0][c]) < abs(a[$1][c]) }!
                (a[c], a[p], b[c], b[p]) = (a[p], a[c], b[p], b[c])
                if abs(a[c][c]) <= 1e-9 * scale { (a[c], b[c]) = ([Double](repeating: 0, count: width), 0) }
                for r in 0..<width where r != c && a[c][c] != 0 {
                    let f = a[r][c] / a[c][c]
                    for k in 0..<width { a[r][k] -= f * a[c][k] }
                    b[r] -= f * b[c]
                }
            }
            return (0..<width).map { a[$0][$0] != 0 ? b[$0] / a[$0][$0] / columns[$0] : 0 }
        }
        typealias Rates = (callLatency: Double, latency: Double, inverse: Double, gamma: Double)
        func rates(_ chosen: [Int]) throws -> Rates {
            // At one world size hops are exactly calls × (N − 1): α cannot be told from the per-call latency,
            // and solving for both only amplifies rounding, so α is left out there.
            var use = [Bool](repeating: true, count: width)
            use[1] = Set(chosen.map { runs[$0].ranks }).count > 1
            var fit = solve(use, chosen)
            while let negative = fit.indices.first(where: { use[$0] && fit[$0] < 0 && $0 != 2 }) {
                use[negative] = false
                fit = solve(use, chosen)
            }
            guard fit[2] > 0, fit.allSatisfy(\.isFinite) else {
                throw CalibrationError("\(path): the runs do not determine a bandwidth")
            }
            return (fit[0], fit[1], fit[2], fit[3] / fit[2])
        }
        // The lab's links deliver another share of their rate at each world size (87% on 3 hosts, 55–70% on 2
        // and 4 here), which no one β prices, and a thread beside compute costs another γ (its cores are
        // shared otherwise): each world size gets its own fit, checked on its own modes, and predictions beyond
        // the lab take the largest world size's.
        let worldSizes = Set(runs.map(\.ranks)).sorted()
        var fits: [Int: Rates] = [:]
        for n in worldSizes { fits[n] = try rates(runs.indices.filter { runs[$0].ranks == n }) }
        let pooled = try rates(Array(runs.indices))
        let (callLatency, latency, inverse, gamma) = fits[worldSizes.last!]!
        func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }
        let computeRate = median(
            none.map { flops * Double(tokensPerRank) / ($0.compute * min(1, Double(cores) / Double($0.ranks))) })
        let optimizer = max(0, median(none.map { $0.step - $0.compute - $0.exposed })) / Double(layout.count)
        var model = ClusterModel(
            flopsPerRank: computeRate, latency: latency, bandwidth: 1 / inverse,
            optimizerSecondsPerParameter: optimizer,
            cores: cores, callLatency: callLatency)
        model.threadSlowdown = gamma
        func describe(_ f: Rates) -> String {
            String(
                format:
                    "%.1f ms per call, α %.2f ms per hop, β %.1f Mbit/s (%.0f%% of the link), a communication thread's bytes %.2f× slower (γ %.2f)",
                f.callLatency * 1e3, f.latency * 1e3, 8 / f.inverse / 1e6, 100 * 8 / f.inverse / link, 1 + f.gamma,
                f.gamma)
        }
        log(
            String(
                format:
                    "calibrated from %@ (links %.0f Mbit/s): %.2f GFLOP/s per rank, optimizer %.2f ns/parameter, %d cores",
                path, link / 1e6, model.flopsPerRank / 1e9, optimizer * 1e9, cores))
        for n in worldSizes { log("  \(n) ranks: \(describe(fits[n]!))") }
        log("  all together: \(describe(pooled)); beyond the lab: the \(worldSizes.last!)-rank fit")
        log("  ranks  mode               measured comm s  predicted   error   measured step s  predicted   error")
        var validation: [[String: Any]] = []
        for r in runs.sorted(by: { ($0.ranks, $0.label) < ($1.ranks, $1.label) }) {
            var own = model  // the run's world size's links
            let f = fits[r.ranks]!
            (own.callLatency, own.latency, own.bandwidth, own.threadSlowdown) = (
                f.callLatency, f.latency, 1 / f.inverse, f.gamma
            )
            let p = ScalingSimulator.predict(
                parameters: layout.count, flopsPerToken: flops, ranks: r.ranks, tokensPerRank: tokensPerRank,
                microTokens: tokensPerRank, bucketBytes: Int(config.train.bucketMB * 1_048_576), cluster: own,
                sharding: r.mode, units: units, prefetch: r.prefetch)
            let (commError, stepError) = ((p.commS - r.comm) / r.comm, (p.stepS - r.step) / r.step)
            log(
                String(
                    format: "  %5d  %@  %15.3f  %9.3f  %+6.1f%%  %15.3f  %9.3f  %+6.1f%%", r.ranks,
                    r.label.padding(toLength: 17, withPad: " ", startingAt: 0),
                    r.comm, p.commS, 100 * commError, r.step, p.stepS, 100 * stepError))
            validation.append([
                "mode": r.label, "ranks": r.ranks, "measured_comm_s": r.comm, "predicted_comm_s": p.commS,
                "comm_error": commError, "measured_step_s": r.step, "predicted_step_s": p.stepS,
                "step_error": stepError,
            ])
        }
        return (model, link / 8, validation)
    }

    /// Fits the model to a bench-scaling run; `log` gets the fit and predicted against measured step times.
    public static func fit(path: String, log: (String) -> Void) throws -> (ClusterModel, [[String: Any]]) {
        guard let data = FileManager.default.contents(atPath: path),
            let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let results = root["results"] as? [[String: Any]], let configObject = root["config"]
        else { throw CalibrationError("\(path): not a scaling.json written by cluster/bench-scaling.sh") }
        let config = try JSONDecoder().decode(
            RunConfig.self, from: JSONSerialization.data(withJSONObject: configObject))
        let layout = ParameterLayout(config: config.model)
        let flops = ParameterLayout.flopsPerToken(config.model, seqLen: config.train.seqLen)
        func number(_ r: [String: Any], _ k: String) -> Double? { (r[k] as? NSNumber)?.doubleValue }
        guard let one = results.first(where: { $0["mode"] as? String == "weak" && number($0, "ranks") == 1 }),
            let tokens = number(one, "tokens_per_step"), let compute = number(one, "compute_s"),
            let optimizer = number(one, "optimizer_s")
        else { throw CalibrationError("\(path): needs the weak 1-rank result with compute_s and optimizer_s") }
        let multi = results.filter { number($0, "ranks") ?? 1 > 1 }
        let bandwidth = multi.compactMap { number($0, "bus_bytes_per_s_raw_mpi_25mb_messages") }.max() ?? 1e9
        let latency =
            multi.compactMap { r -> Double? in
                guard let t = number(r, "raw_small_seconds"), let n = number(r, "ranks") else { return nil }
                return t / (2 * (n - 1))
            }.min() ?? 1e-5
        let cores = ((root["machine"] as? [String: Any])?["cores"] as? NSNumber)?.intValue
        let model = ClusterModel(
            flopsPerRank: flops * tokens / compute, latency: latency, bandwidth: bandwidth,
            optimizerSecondsPerParameter: optimizer / Double(layout.count), cores: cores)
        log(
            String(
                format:
                    "calibrated from %@: %.1f GFLOP/s per rank, α %.1f µs, β %.2f GB/s, optimizer %.2f ns/parameter, %d cores",
                path, model.flopsPerRank / 1e9, latency * 1e6, bandwidth / 1e9,
                model.optimizerSecondsPerParameter * 1e9, cores ?? 0))
        log("  mode    ranks  measured step s  predicted step s   error   measured eff.  predicted eff.")
        var validation: [[String: Any]] = []
        let seq = config.train.seqLen
        for r in results.sorted(by: {
            ($0["mode"] as! String, number($0, "ranks")!) < ($1["mode"] as! String, number($1, "ranks")!)
        }) {
            guard let mode = r["mode"] as? String, let n = number(r, "ranks"),
                let tokens = number(r, "tokens_per_step"),
                let measured = number(r, "step_s")
            else { continue }
            let ranks = Int(n), perRank = Int(tokens) / ranks
            let micro = mode == "weak" ? config.train.microBatch * seq : perRank
            let p = ScalingSimulator.predict(
                parameters: layout.count, flopsPerToken: flops, ranks: ranks, tokensPerRank: perRank,
                microTokens: micro, bucketBytes: Int(config.train.bucketMB * 1_048_576), cluster: model)
            let error = (p.stepS - measured) / measured
            let measuredEfficiency = number(r, "per_rank_efficiency") ?? 0
            // Predicted per-rank efficiency relative to the same mode's 1-rank prediction.
            let base = ScalingSimulator.predict(
                parameters: layout.count, flopsPerToken: flops, ranks: 1,
                tokensPerRank: mode == "weak" ? perRank : Int(tokens),
                microTokens: mode == "weak" ? micro : Int(tokens),
                bucketBytes: Int(config.train.bucketMB * 1_048_576), cluster: model)
            let predictedEfficiency = mode == "weak" ? base.stepS / p.stepS : base.stepS / (Double(ranks) * p.stepS)
            log(
                String(
                    format: "  %-6@  %5d  %15.3f  %16.3f  %+6.1f%%  %14.3f  %14.3f", mode, ranks, measured, p.stepS,
                    100 * error,
                    measuredEfficiency, predictedEfficiency))
            validation.append([
                "mode": mode, "ranks": ranks, "measured_step_s": measured, "predicted_step_s": p.stepS, "error": error,
                "measured_efficiency": measuredEfficiency, "predicted_efficiency": predictedEfficiency,
            ])
        }
        return (model, validation)
    }
}
