// cluster/slurm.sbatch under a real Slurm (Debian's slurmctld, slurmd and munge, started here by
// cluster/local-slurm.sh on one node of this machine, proctrack/linuxproc and task/none, and stopped after): the job is signalled as a
// time limit would signal it, commits, requeues itself, resumes and completes with the parameters of an
// uninterrupted run. Skipped, saying why, where the daemons cannot run (not root, or not installed).
import Foundation
import Testing

/// A one-node Slurm of this machine in a directory of its own (cluster/local-slurm.sh: munged on its own socket
/// and key, slurmctld and slurmd on ports of their own, every state and log file inside `dir`).
final class LocalSlurm {
    static let binaries = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch"]
    static var available: Bool {
        getuid() == 0 && binaries.allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    let dir: String
    var environment: [String: String] { ["SLURM_CONF": dir + "/slurm.conf"] }
    private var script: String { packageRoot + "/cluster/local-slurm.sh" }

    /// Starts the daemons through system(3): Foundation's Process counts a child as running while any descendant
    /// holds the descriptor it watches, and a daemon keeps it for good.
    init() throws {
        dir = NSTemporaryDirectory() + "llama-train-slurm-\(UUID().uuidString.prefix(8))"
        let status = system("'\(script)' up '\(dir)' > '\(dir).log' 2>&1 < /dev/null")
        guard status == 0 else {
            let output = (try? String(contentsOfFile: dir + ".log", encoding: .utf8)) ?? ""
            try? FileManager.default.removeItem(atPath: dir + ".log")
            throw LocalSlurmError(description: "cluster/local-slurm.sh up: status \(status): \(output)")
        }
    }

    /// The job's field `name` as `scontrol show job` gives it (JobState, Restarts, ...).
    func job(_ id: String, _ name: String) throws -> String? {
        let text = try run(["scontrol", "show", "job", id], environment: environment).stdout
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.hasPrefix(name + "=") }.map {
            String($0.dropFirst(name.count + 1))
        }
    }

    func stop() { _ = system("'\(script)' down '\(dir)' > /dev/null 2>&1") }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
        try? FileManager.default.removeItem(atPath: dir + ".log")
    }
}

struct LocalSlurmError: Error, CustomStringConvertible { let description: String }

@Suite(.serialized) struct SlurmTests {
    /// sbatch cluster/slurm.sbatch from this checkout on a 2-task job; SIGUSR1 to the batch script mid-run
    /// (what --signal=B:USR1@120 sends before the time limit): the ranks commit the last completed step and exit
    /// 75, the script requeues the job, the second start resumes, and the job completes with the final
    /// parameters of an uninterrupted run, bit for bit.
    @Test(
        .enabled(
            if: LocalSlurm.available, "needs root and Debian's slurmctld, slurmd and munge (make test installs them)"))
    func theSbatchScriptIsSignalledRequeuesResumesAndCompletes() throws {
        let tool = try toolPath()
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try writePreemptionConfig(dir, steps: 4)
        let reference = try run(mpirun2 + [tool, "pretrain", "--config", config, "--out", dir + "/full"], timeout: 300)
        #expect(reference.status == 0, "\(reference.stderr)")

        let slurm = try LocalSlurm()
        defer { slurm.stop() }
        let environment = slurm.environment.merging([
            "RUN_DIR": dir + "/run", "LLAMA_TRAIN": tool, "TRAIN_ARGS": "--log-every 1",
        ]) { $1 }
        let submitted = try run(
            [
                "sbatch", "--parsable", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1",
                "--time=15", "--chdir=\(packageRoot)", "--output=\(dir)/slurm-%j.out",
                packageRoot + "/cluster/slurm.sbatch",
                config,
            ], environment: environment)
        try #require(submitted.status == 0, "\(submitted.stderr)")
        let id = String(submitted.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ";")[0])
        let output = dir + "/slurm-\(id).out"
        func log() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        var deadline = Date().addingTimeInterval(240)
        while Date() < deadline && metricsLines(dir + "/run/metrics.jsonl") < 2 { usleep(200_000) }
        try #require(metricsLines(dir + "/run/metrics.jsonl") >= 2, "the job never trained 2 steps:\n\(log())")
        let signalled = try run(["scancel", "--batch", "--signal=USR1", id], environment: environment)
        #expect(signalled.status == 0, "\(signalled.stderr)")

        deadline = Date().addingTimeInterval(400)
        var state = "", hurried = false, requeued: Date?
        while Date() < deadline {
            state = try slurm.job(id, "JobState") ?? ""
            if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"].contains(state) { break }
            // Slurm makes a requeued batch job eligible 121 s later; the test does not wait for that, but leaves
            // slurmd a few seconds to finish with the cancelled run (relaunched at once, the job failed here now
            // and then without running its script).
            if state == "PENDING", !hurried, try slurm.job(id, "Restarts") == "1" {
                requeued = requeued ?? Date()
            }
            if let requeued, !hurried, Date().timeIntervalSince(requeued) >= 5 {
                hurried =
                    try run(["scontrol", "update", "JobId=\(id)", "StartTime=now"], environment: environment).status
                    == 0
            }
            usleep(500_000)
        }
        let text = log()
        // The daemons' own account, for a job that failed without a word in its log.
        let daemons = ["slurmd.log", "slurmctld.log"].map { name in
            let lines = ((try? String(contentsOfFile: slurm.dir + "/" + name, encoding: .utf8)) ?? "").split(
                separator: "\n")
            return "--- \(name)\n" + lines.suffix(15).joined(separator: "\n")
        }.joined(separator: "\n")
        #expect(state == "COMPLETED", "job \(id) is \(state):\n\(text)\n\(daemons)")
        #expect(try slurm.job(id, "Restarts") == "1", "\(text)")
        #expect(text.contains("stopped early, checkpoint committed: requeueing job \(id)"), "\(text)")
        #expect(text.contains("resumed from"), "\(text)")
        let a = FileManager.default.contents(atPath: dir + "/full/model.safetensors")
        #expect(a != nil && a == FileManager.default.contents(atPath: dir + "/run/final/model.safetensors"), "\(text)")
    }
}
