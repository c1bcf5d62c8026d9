// Preemption at the paper's step times: a signal is honoured at the next micro-step boundary (the partial step
// dropped, the last completed one committed, exit 75), a relaunch resumes bitwise; signals during start-up and
// during a background save leave every committed checkpoint intact; --checkpoint-every-minutes commits by the
// clock. Each against an uninterrupted run of the same config.
import Foundation
import Testing

/// A job started in the background, its output in files, for tests that signal it while it runs.
final class BackgroundJob {
    let process = Process()
    let stdoutPath: String, stderrPath: String

    init(_ arguments: [String], in dir: String, environment extra: [String: String] = [:]) throws {
        (stdoutPath, stderrPath) = (dir + "/job-\(UUID().uuidString).out", dir + "/job-\(UUID().uuidString).err")
        for path in [stdoutPath, stderrPath] { FileManager.default.createFile(atPath: path, contents: nil) }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
        }
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        environment.merge(extra) { $1 }
        process.environment = environment
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
    }

    /// A test that fails part-way leaves no job behind: mpirun ends its ranks when it is terminated.
    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits until `condition` holds or `timeout` passes; false on timeout or if the job ended first.
    func wait(for timeout: TimeInterval, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            if !process.isRunning { return condition() }
            usleep(20_000)
        }
        return false
    }

    /// The exit status once the job ends (killed after `timeout`).
    func finish(timeout: TimeInterval = 120) -> Int32 {
        if !wait(for: timeout, until: { !process.isRunning }) {
            process.terminate()
            Issue.record("the job did not end within \(timeout) s")
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Whether `pid` has taken SIGTERM over (PreemptionSignal's dispatch source: caught or ignored, by
    /// /proc's SigCgt and SigIgn): from then on a SIGTERM is read, not fatal.
    static func catchesSIGTERM(_ pid: pid_t) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
        let masks = status.split(separator: "\n").filter { $0.hasPrefix("SigIgn:") || $0.hasPrefix("SigCgt:") }
            .compactMap {
                UInt64($0.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16)
            }
        return masks.contains { $0 & (1 << (UInt64(SIGTERM) - 1)) != 0 }
    }

    /// The pids of mpirun's ranks by rank (OMPI_COMM_WORLD_RANK in each child's environment).
    func ranks(expected: Int, timeout: TimeInterval = 60) -> [Int: pid_t] {
        var found: [Int: pid_t] = [:]
        _ = wait(for: timeout) {
            found = [:]
            let children =
                (try? String(
                    contentsOfFile: "/proc/\(process.processIdentifier)/task/\(process.processIdentifier)/children",
                    encoding: .utf8)) ?? ""
            for pid in children.split(separator: " ").compactMap({ pid_t($0) }) {
                guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
                for entry in environ.split(separator: 0) {
                    let text = String(decoding: entry, as: UTF8.self)
                    if text.hasPrefix("OMPI_COMM_WORLD_RANK="), let r = Int(text.dropFirst(21)) { found[r] = pid }
                }
            }
            return found.count == expected
        }
        return found
    }
}

/// 2 ranks × 8 micro-steps of 4 × 128 tokens per step, about half a second each on one core: a step long enough
/// that a signal lands inside it.
func writePreemptionConfig(_ dir: String, steps: Int) throws -> String {
    let path = dir + "/preempt.json"
    try """
    {"model": {"dim": 192, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 512, "ffn_hidden_size": 512,
               "max_seq_len": 128},
     "train": {"seq_len": 128, "micro_batch": 4, "global_batch_tokens": 8192, "steps": \(steps), "lr": 1e-3,
               "warmup_steps": 1, "seed": 5, "synthetic_ignore_fraction": 0.2}}
    """.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// The first number after `prefix` in `text`.
func number(after prefix: String, in text: String) -> Double? {
    guard let range = text.range(of: prefix) else { return nil }
    return Double(text[range.upperBound...].prefix { $0.isNumber || $0 == "." })
}

func metricsLines(_ path: String) -> Int {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").count
}

func committedSteps(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix("step-") }.sorted()
}

@Suite(.serialized) struct PreemptionTests {
    /// SIGTERM to one rank in the middle of step 2 of 4: the ranks agree at the next micro-step boundary, drop
    /// the step, commit step 1 and exit 75 within a micro-step and the save; the relaunch ends with the
    /// uninterrupted run's parameters, bit for bit. Under `full` the reduce-scatters of the dropped micro-steps
    /// have run and a prefetch may be in flight: the boundary is the same on every rank all the same.
    @Test(arguments: ["none", "full"]) func aSignalMidStepIsHonouredAtTheNextMicroStep(sharding: String) throws {
        let tool = try toolPath()
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try writePreemptionConfig(dir, steps: 4)
        let common = ["pretrain", "--config", config, "--sharding", sharding, "--log-every", "1"]
        let reference = try run(mpirun2 + [tool] + common + ["--out", dir + "/full"], timeout: 300)
        #expect(reference.status == 0, "\(reference.stderr)")

        let job = try BackgroundJob(
            mpirun2 + [tool] + common + ["--checkpoint-dir", dir + "/ck", "--metrics", dir + "/m.jsonl"], in: dir)
        let ranks = job.ranks(expected: 2)
        try #require(ranks.count == 2, "\(job.stderr)")
        try #require(
            job.wait(for: 200) { job.stdout.contains("a micro-step takes") }, "step 1 never ended: \(job.stderr)")
        let micro = try #require(number(after: "a micro-step takes ", in: job.stdout), "\(job.stdout)")
        // Into step 2, a micro-step or two in: early in its 8, since under a loaded machine the line above may be
        // read late.
        usleep(useconds_t(1.5 * micro * 1e6))
        kill(ranks[1]!, SIGTERM)
        let signalled = Date()
        let status = job.finish()
        let waited = Date().timeIntervalSince(signalled)
        #expect(status == 75, "\(job.stdout)\n\(job.stderr)")
        let out = job.stdout
        #expect(out.contains("preempted (a signal to another rank), during step 2 ("), "\(out)")
        let done = try #require(number(after: "during step 2 (", in: out), "\(out)")
        #expect(done >= 1 && done < 8, "the step was dropped part-way: \(out)")
        #expect(out.contains("checkpoint of step 1 committed"), "\(out)")
        let save = try #require(number(after: "written in ", in: out), "\(out)")
        // A micro-step, the save, and the job's teardown (MPI_Finalize, mpirun), with room for a loaded machine:
        // the dropped step above is what shows the rest of the step was not waited for.
        #expect(
            waited < 2 * micro + save + 3, "exit \(waited) s after the signal; micro-step \(micro) s, save \(save) s")
        #expect(committedSteps(dir + "/ck") == ["step-00000001"])

        let resumed = try run(
            mpirun2 + [tool] + common + ["--checkpoint-dir", dir + "/ck", "--out", dir + "/resumed"], timeout: 300)
        #expect(resumed.status == 0 && resumed.stdout.contains("resumed from"), "\(resumed.stdout)\(resumed.stderr)")
        let a = FileManager.default.contents(atPath: dir + "/full/model.safetensors")
        #expect(a != nil && a == FileManager.default.contents(atPath: dir + "/resumed/model.safetensors"))
    }

    /// SIGTERM during start-up of a resumed run stops before a step with the checkpoint it resumed from; SIGTERM
    /// while a background save writes waits for that save; either way every committed checkpoint verifies (it
    /// exports) and the relaunch ends bitwise where the uninterrupted run does.
    @Test func signalsDuringStartUpAndABackgroundSaveLeaveCheckpointsIntact() throws {
        let tool = try toolPath()
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try writeCheckpointConfig(dir, steps: 400)
        _ = try pretrain(mpirun2, config, ["--out", dir + "/full"])
        let ck = ["--checkpoint-dir", dir + "/ck", "--background-save", "--checkpoint-every", "1", "--keep", "3"]
        _ = try pretrain(mpirun2, config, ck + ["--stop-after", "2"])

        // Start-up: the signal is caught from the first instant and read before step 3.
        let early = try BackgroundJob(mpirun2 + [tool, "pretrain", "--config", config] + ck, in: dir)
        let ranks = early.ranks(expected: 2)
        try #require(ranks.count == 2, "\(early.stderr)")
        try #require(early.wait(for: 30) { BackgroundJob.catchesSIGTERM(ranks[0]!) }, "\(early.stderr)")
        kill(ranks[0]!, SIGTERM)
        #expect(early.finish() == 75, "\(early.stdout)\(early.stderr)")
        #expect(
            early.stdout.contains("preempted (SIGTERM): checkpoint of step 2 committed (the one resumed from)"),
            "\(early.stdout)")
        #expect(
            !early.stdout.contains(" 3/400 |"), "the signal came during start-up: no step is taken\n\(early.stdout)")

        // A background save in flight: steps of a few ms, a checkpoint after each.
        let busy = try BackgroundJob(
            mpirun2 + [tool, "pretrain", "--config", config, "--log-every", "1"] + ck, in: dir)
        let busyRanks = busy.ranks(expected: 2)
        try #require(busyRanks.count == 2, "\(busy.stderr)")
        try #require(busy.wait(for: 120) { busy.stdout.contains(" 60/400 |") }, "\(busy.stdout)\(busy.stderr)")
        kill(busyRanks[1]!, SIGTERM)
        #expect(busy.finish() == 75, "\(busy.stdout)\(busy.stderr)")
        let steps = committedSteps(dir + "/ck")
        #expect(steps.count == 3, "\(steps)")
        for step in steps {
            let exported = try run([tool, "export", "--checkpoint", dir + "/ck/" + step, "--out", dir + "/x-" + step])
            #expect(exported.status == 0, "\(step): \(exported.stderr)")
        }
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/ck")) ?? []).filter {
            !$0.hasPrefix("step-") && $0 != "job.lock"
        }
        #expect(leftovers.isEmpty, "\(leftovers)")
        _ = try pretrain(mpirun2, config, ["--checkpoint-dir", dir + "/ck", "--out", dir + "/resumed"])
        #expect(
            FileManager.default.contents(atPath: dir + "/full/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/resumed/model.safetensors"))
    }

    /// --checkpoint-every-minutes: rank 0's clock asks, every rank saves at the same step. An interval far
    /// shorter than a step saves after every step; one far longer, only at the end.
    @Test func checkpointsByTheClockCommitOnEveryRankAtTheSameStep() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try writeCheckpointConfig(dir, steps: 5)
        _ = try pretrain(
            mpirun2, config, ["--checkpoint-dir", dir + "/often", "--checkpoint-every-minutes", "1e-6", "--keep", "10"])
        #expect(committedSteps(dir + "/often").count == 5, "\(committedSteps(dir + "/often"))")
        _ = try pretrain(
            mpirun2, config, ["--checkpoint-dir", dir + "/rarely", "--checkpoint-every-minutes", "60", "--keep", "10"])
        #expect(committedSteps(dir + "/rarely") == ["step-00000005"])
        let refused = try run([try toolPath(), "pretrain", "--config", config, "--checkpoint-every-minutes", "5"])
        #expect(refused.status == 2 && refused.stderr.contains("need --checkpoint-dir"), "\(refused.stderr)")
    }
}

@Suite(.serialized) struct WatchdogScaleTests {
    /// 16 oversubscribed ranks (a timeout of 8 s, so a grace of 2 s for the waiting ranks to be heard on a loaded
    /// machine), one of them stopped (SIGSTOP) mid-run: the watchdog names it, and all ranks
    /// together send at most 2·K·N messages (K = ⌈log₂ 16⌉ = 4 coordinators), where telling every rank sends
    /// N·(N − 1) = 240 (what it did before: each waiting rank told all 15 others).
    @Test func aStalledRankOf16IsNamedWithNLogNMessages() throws {
        let tool = try toolPath()
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = dir + "/w.json"
        try """
        {"model": {"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "vocab_size": 64, "ffn_hidden_size": 64,
                   "max_seq_len": 8},
         "train": {"seq_len": 8, "micro_batch": 1, "global_batch_tokens": 128, "steps": 1000000, "lr": 1e-3,
                   "warmup_steps": 1, "seed": 1}}
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let n = 16
        let job = try BackgroundJob(
            mpirunFast + ["-np", "\(n)", tool, "pretrain", "--config", config, "--collective-timeout", "8"], in: dir)
        let ranks = job.ranks(expected: n, timeout: 120)
        defer { for pid in ranks.values { kill(pid, SIGKILL) } }
        try #require(ranks.count == n, "\(job.stderr)")
        try #require(job.wait(for: 120) { job.stdout.contains(" 3/1000000 |") }, "\(job.stdout)\(job.stderr)")
        let victim = 9
        kill(ranks[victim]!, SIGSTOP)
        let status = job.finish(timeout: 90)
        #expect(status != 0)
        let err = job.stderr
        #expect(err.contains("watchdog") && err.contains("rank(s) \(victim) never arrived"), "\(err)")
        // Each rank's first announcement, "[rank r] watchdog: waited ...; M message(s) sent": the stall's. (Ending
        // the job, mpirun wakes the stopped rank: the collectives it held complete, and the next ones may start a
        // second round while the abort spreads; that is the job's end, not the stall.)
        var totals: [Int: Int] = [:]
        for line in err.split(separator: "\n") where line.contains("] watchdog: waited") {
            guard let r = number(after: "[rank ", in: String(line)), let m = number(after: "; ", in: String(line)),
                Int(r) != victim, totals[Int(r)] == nil
            else { continue }
            totals[Int(r)] = Int(m)
        }
        let sent = totals.values.reduce(0, +)
        #expect(totals.count == n - 1, "every rank but the stopped one announced: \(totals)")
        #expect(sent > 0 && sent <= 2 * 4 * n && sent < n * (n - 1), "\(sent) messages: \(totals)")
    }
}
