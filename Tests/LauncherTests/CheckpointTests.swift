// Sharded checkpoints under a real mpirun: bitwise resume, resume on another number of ranks, a rank killed
// while writing, every kind of corruption detected and fallen back from, preemption by SIGTERM, a stalled
// rank caught by the watchdog, and export to the Hugging Face layout.
import Foundation
import TestSupport
import Testing

/// Two ranks. A run stopped early exits 75 on every rank, and mpirun then waits odls_base_sigkill_timeout
/// (1 s) before reporting it; the tests stop runs often, so they skip that wait.
let mpirunFast = ["mpirun", "--mca", "odls_base_sigkill_timeout", "0", "--oversubscribe"]
let mpirun2 = mpirunFast + ["-np", "2"]

/// 12 sequences per step: splits over 1, 2 and 3 ranks with micro-batch 2.
func writeCheckpointConfig(_ dir: String, steps: Int = 6) throws -> String {
    let path = dir + "/run.json"
    try """
    {"model": {"dim": 48, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 200, "ffn_hidden_size": 96,
               "max_seq_len": 16},
     "train": {"seq_len": 16, "micro_batch": 2, "global_batch_tokens": 192, "steps": \(steps), "lr": 1e-3,
               "warmup_steps": 1, "seed": 3, "synthetic_ignore_fraction": 0.3}}
    """.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

func losses(_ path: String) throws -> [Double] {
    try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
        (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any])["loss"] as! Double
    }
}

func pretrain(_ launcher: [String], _ config: String, _ extra: [String]) throws -> Run {
    let r = try run(launcher + [try toolPath(), "pretrain", "--config", config, "--log-every", "100"] + extra)
    // A run stopped before its schedule's end exits 75 (EX_TEMPFAIL: relaunch to resume), a finished one 0.
    #expect(r.status == (extra.contains("--stop-after") ? 75 : 0), "\(extra): \(r.stderr)")
    return r
}

@Suite(.serialized) struct CheckpointTests {
    /// A second job on a checkpoint directory another process holds is refused before it trains or writes,
    /// naming the directory; once the holder is gone the same command runs.
    @Test func busyCheckpointDirectoryIsRefused() throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir)
        try FileManager.default.createDirectory(atPath: dir + "/ck", withIntermediateDirectories: true)
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = [dir + "/ck/job.lock", "sleep", "4"]  // holds the lock for 4 s (its child inherits it)
        try holder.run()
        defer { if holder.isRunning { holder.terminate() } }
        Thread.sleep(forTimeInterval: 0.5)
        let refused = try run([try toolPath(), "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck"])
        #expect(refused.status == 1 && refused.stderr.contains("in use by another job"), "\(refused.stderr)")
        #expect(committedCheckpointNames(dir + "/ck").isEmpty, "the refused job wrote a checkpoint")
        holder.waitUntilExit()
        _ = try pretrain([], config, ["--checkpoint-dir", dir + "/ck"])
    }

    /// Between two real jobs: the second is refused naming the first's host and pid; once the first is
    /// killed (-9, so its lock file still names it), the next job takes the lock over and says from whom.
    @Test func aRunningJobsLockRefusesASecondAndADeadOnesIsTakenOver() throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 100_000)
        let first = Process()
        first.executableURL = URL(fileURLWithPath: try toolPath())
        first.arguments = ["pretrain", "--config", config, "--checkpoint-dir", dir + "/ck"]
        first.standardOutput = FileHandle.nullDevice
        try first.run()
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let lock = dir + "/ck/job.lock"
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, (try? String(contentsOfFile: lock, encoding: .utf8))?.contains("pid") != true {
            usleep(50_000)
        }
        let refused = try run([try toolPath(), "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck"])
        #expect(
            refused.status == 1 && refused.stderr.contains("in use by another job")
                && refused.stderr.contains("pid \(first.processIdentifier)") && refused.stderr.contains("host "),
            "\(refused.stderr)")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        let next = try run([
            try toolPath(), "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck", "--stop-after", "1",
        ])
        #expect(next.status == 75, "stopped after step 1, to be resumed: \(next.stderr)")
        #expect(
            next.stdout.contains("took over the lock") && next.stdout.contains("pid \(first.processIdentifier)"),
            "\(next.stdout)")
    }

    /// A checkpoint written by the build before checkpoints could hold several models (format 2, committed in
    /// Fixtures/format2-checkpoint with that build's own final model after resuming it) resumes here and
    /// finishes where that build finished: bitwise on the CPU that wrote the fixture (an AMD EPYC), to float32
    /// round-off on another, whose OpenBLAS picks other sgemm kernels (an Intel Xeon differs by 6e-9).
    @Test func formatTwoCheckpointOfTheEarlierBuildResumes() throws {
        let fixture = packageRoot + "/Tests/LauncherTests/Fixtures/format2-checkpoint"
        let dir = try scratch()
        try FileManager.default.createDirectory(atPath: dir + "/ck", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture + "/step-00000002", toPath: dir + "/ck/step-00000002")
        let resumed = try pretrain(
            [], fixture + "/config.json", ["--checkpoint-dir", dir + "/ck", "--out", dir + "/out"])
        #expect(resumed.stdout.contains("resumed from \(dir)/ck/step-00000002 (step 2"), "\(resumed.stdout)")
        let ours = try parameters(dir + "/out/model.safetensors"),
            theirs = try parameters(fixture + "/final.safetensors")
        #expect(!ours.isEmpty && maxDifference(ours, theirs) <= 1e-6, "max |Δ| \(maxDifference(ours, theirs))")
    }

    @Test(arguments: [1, 2])
    func resumeIsBitwiseIdentical(ranks: Int) throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir)
        let launcher = ranks == 1 ? [] : mpirun2
        _ = try pretrain(launcher, config, ["--out", dir + "/full", "--metrics", dir + "/full.jsonl"])
        let first = try pretrain(
            launcher, config, ["--checkpoint-dir", dir + "/ck", "--stop-after", "3", "--metrics", dir + "/a.jsonl"])
        #expect(first.stdout.contains("stopped after step 3"))
        let second = try pretrain(
            launcher, config,
            ["--checkpoint-dir", dir + "/ck", "--out", dir + "/resumed", "--metrics", dir + "/b.jsonl"])
        #expect(second.stdout.contains("resumed from \(dir)/ck/step-00000003"))
        #expect(
            FileManager.default.contents(atPath: dir + "/full/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/resumed/model.safetensors"))
        #expect(try losses(dir + "/full.jsonl") == (try losses(dir + "/a.jsonl")) + (try losses(dir + "/b.jsonl")))
    }

    /// Another world size sums the same gradients in another order: float32 round-off, about 1e-7 relative per
    /// step, which AdamW keeps below 1e-5 of a weight after six steps at lr 1e-3.
    @Test(arguments: [(2, 1), (1, 3)])
    func resumeOnAnotherNumberOfRanks(before: Int, after: Int) throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir)
        func launcher(_ n: Int) -> [String] { n == 1 ? [] : mpirunFast + ["-np", "\(n)"] }
        _ = try pretrain(launcher(before), config, ["--out", dir + "/full"])
        _ = try pretrain(launcher(before), config, ["--checkpoint-dir", dir + "/ck", "--stop-after", "3"])
        let resumed = try pretrain(
            launcher(after), config, ["--checkpoint-dir", dir + "/ck", "--out", dir + "/resumed"])
        #expect(resumed.stdout.contains("saved on \(before) rank(s), now \(after)"))
        let a = try parameters(dir + "/full/model.safetensors"), b = try parameters(dir + "/resumed/model.safetensors")
        let diff = maxDifference(a, b)
        #expect(diff <= 1e-5, "\(before) → \(after) ranks: max |Δ| \(diff)")
    }

    /// A rank killed (-9) while writing ends the job instead of hanging and leaves the last committed
    /// checkpoint intact, replicated or fully sharded.
    @Test(arguments: ["none", "full"])
    func rankKilledWhileWritingLeavesThePreviousCheckpoint(sharding: String) throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir)
        _ = try pretrain(
            mpirun2, config, ["--checkpoint-dir", dir + "/ck", "--stop-after", "2", "--sharding", sharding])
        let crashed = try run(
            mpirun2 + [
                try faultyToolPath(), "--die-in-checkpoint", "1", "pretrain", "--config", config,
                "--checkpoint-dir", dir + "/ck", "--stop-after", "4", "--sharding", sharding,
            ])
        #expect(crashed.status != 0)
        #expect(!FileManager.default.fileExists(atPath: dir + "/ck/step-00000004/manifest.json"))
        let resumed = try pretrain(mpirun2, config, ["--checkpoint-dir", dir + "/ck", "--sharding", sharding])
        #expect(resumed.stdout.contains("resumed from \(dir)/ck/step-00000002"), "\(resumed.stdout)")
    }

    @Test(arguments: ["flip-middle", "truncate", "delete", "manifest"])
    func corruptionIsDetectedAndFallenBackFrom(_ damage: String) throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir)
        _ = try pretrain(
            mpirun2, config, ["--checkpoint-dir", dir + "/ck", "--stop-after", "4", "--checkpoint-every", "2"])
        let newest = dir + "/ck/step-00000004"
        let shard = newest + "/shard-00001-of-00002.bin"
        var bytes = [UInt8](FileManager.default.contents(atPath: shard)!)
        switch damage {
        case "flip-start", "flip-middle", "flip-end":
            // One bit of a single byte: near the start, in the middle, the last.
            let at = ["flip-start": 7, "flip-middle": bytes.count / 2, "flip-end": bytes.count - 1][damage]!
            bytes[at] ^= 0x10
            try Data(bytes).write(to: URL(fileURLWithPath: shard))
        case "truncate": try Data(bytes.prefix(bytes.count - 5)).write(to: URL(fileURLWithPath: shard))
        case "delete": try FileManager.default.removeItem(atPath: shard)
        default: try "{ not json".write(toFile: newest + "/manifest.json", atomically: true, encoding: .utf8)
        }
        let resumed = try pretrain(mpirun2, config, ["--checkpoint-dir", dir + "/ck"])
        let named = damage.hasPrefix("manifest") ? newest + "/manifest.json" : shard
        #expect((resumed.stdout + resumed.stderr).contains(named), "\(damage): \(resumed.stdout)\(resumed.stderr)")
        #expect(resumed.stdout.contains("resumed from \(dir)/ck/step-00000002"), "\(damage): \(resumed.stdout)")
        // An explicit --resume of the damaged checkpoint fails instead of falling back.
        let explicit = try run(
            mpirun2 + [
                try toolPath(), "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck2", "--resume", newest,
            ])
        #expect(explicit.status != 0)
    }

    @Test func sigtermCommitsACheckpointAndTheResumeIsBitwise() throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 2000)
        _ = try pretrain([], config, ["--out", dir + "/full"])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try toolPath())
        process.arguments = ["pretrain", "--config", config, "--checkpoint-dir", dir + "/ck", "--log-every", "1000"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        usleep(1_000_000)
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 75, "SIGTERM must end the run with a checkpoint and exit code 75")
        let committed = try FileManager.default.contentsOfDirectory(atPath: dir + "/ck").filter {
            $0.hasPrefix("step-")
        }
        #expect(committed.count == 1 && !committed.contains("step-00002000"), "\(committed)")
        _ = try pretrain([], config, ["--checkpoint-dir", dir + "/ck", "--out", dir + "/resumed"])
        #expect(
            FileManager.default.contents(atPath: dir + "/full/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/resumed/model.safetensors"))
    }

    @Test func stalledRankIsNamedByTheWatchdog() throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 100_000)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            mpirun2 + [
                try toolPath(), "pretrain", "--config", config, "--collective-timeout", "3", "--log-every", "100000",
            ]
        var environment = ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
        }
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        process.environment = environment
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        process.standardError = FileHandle(forWritingAtPath: dir + "/err")
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        var ranks: [String] = []
        let deadline = Date().addingTimeInterval(60)
        while ranks.count < 2 && Date() < deadline {
            usleep(200_000)
            ranks = try run(["pgrep", "-P", "\(process.processIdentifier)", "-f", "pretrain"]).stdout.split(
                separator: "\n"
            ).map(String.init)
        }
        try #require(ranks.count == 2)
        usleep(1_000_000)
        // Which rank a pid is: the one that is not rank 0 gets stopped; ranks are started in order.
        let victim = ranks.sorted { Int($0)! < Int($1)! }[1]
        #expect(try run(["kill", "-STOP", victim]).status == 0)
        let stoppedAt = Date()
        while process.isRunning && Date().timeIntervalSince(stoppedAt) < 40 { usleep(100_000) }
        let hung = process.isRunning
        if hung {
            _ = try run(["kill", "-9", victim])
            process.terminate()
        }
        #expect(!hung, "the job did not end within 40 s of a rank stalling")
        process.waitUntilExit()
        let message = String(decoding: FileManager.default.contents(atPath: dir + "/err") ?? Data(), as: UTF8.self)
        #expect(message.contains("watchdog") && message.contains("rank(s) 1 never arrived"), "\(message)")
        _ = try? run(["kill", "-9", victim])
    }

    /// fp32 exports equal `--out` byte for byte; the default bf16 holds every weight rounded to bf16 and says
    /// so in config.json; a size limit below the model's splits it into shards with an index that our reader
    /// (and transformers) follows, leaving no single file beside them.
    @Test func exportGivesAHuggingFaceDirectory() throws {
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir)
        _ = try pretrain(mpirun2, config, ["--checkpoint-dir", dir + "/ck", "--out", dir + "/final"])
        let step = dir + "/ck/step-00000006"
        func export(_ out: String, _ extra: [String]) throws {
            let r = try run([try toolPath(), "export", "--checkpoint", step, "--out", dir + "/" + out] + extra)
            #expect(r.status == 0, "\(r.stderr)")
        }
        try export("hf", ["--dtype", "fp32"])
        #expect(
            FileManager.default.contents(atPath: dir + "/hf/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/final/model.safetensors"))
        let trained = try tensors(dir + "/final/model.safetensors")
        try export("bf16", [])
        let bf16 = try bf16Tensors(dir + "/bf16/model.safetensors")
        // Round to nearest even, from the bits: what a bf16 export must hold for each fp32 weight.
        func rounded(_ x: Float) -> UInt16 {
            let bits = x.bitPattern
            return UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        }
        #expect(bf16.count == trained.count && trained.allSatisfy { bf16[$0.key] == $0.value.map(rounded) })
        let bf16Config =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/bf16/config.json")))
            as? [String: Any]
        #expect(bf16Config?["torch_dtype"] as? String == "bfloat16")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/bf16/model.safetensors")).count
        let weights = trained.values.reduce(0) { $0 + $1.count }
        #expect(bytes < 2 * weights + 8192, "bf16 is half the bytes: \(bytes) for \(weights) weights")
        // Sharded at 20 kB: several files and an index, nothing else; read back it is the bf16 model.
        try export("sharded", ["--max-shard-size", "20kB"])
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/sharded")
        let shards = names.filter { $0.hasPrefix("model-") && $0.hasSuffix(".safetensors") }
        #expect(
            shards.count >= 3 && names.contains("model.safetensors.index.json") && !names.contains("model.safetensors"))
        var merged: [String: [UInt16]] = [:]
        for shard in shards { merged.merge(try bf16Tensors(dir + "/sharded/" + shard)) { a, _ in a } }
        #expect(merged == bf16, "the shards together are the single file's tensors")
        let index =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: dir + "/sharded/model.safetensors.index.json")))
            as? [String: Any]
        let map = index?["weight_map"] as? [String: String] ?? [:]
        #expect(Set(map.keys) == Set(bf16.keys) && Set(map.values) == Set(shards))
        // (Our reader of such an index and of BF16 is SafeTensorsTests'.)
        let hfConfig =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/hf/config.json")))
            as! [String: Any]
        #expect(hfConfig["model_type"] as? String == "llama" && hfConfig["num_key_value_heads"] as? Int == 2)
    }
}

/// The step directories with a manifest under `directory`.
func committedCheckpointNames(_ directory: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
        FileManager.default.fileExists(atPath: "\(directory)/\($0)/manifest.json")
    }
}

/// Each BF16 tensor of a safetensors file by name, as raw 16-bit values.
func bf16Tensors(_ path: String) throws -> [String: [UInt16]] { try rawTensors(path, as: UInt16.self, dtype: "BF16") }
