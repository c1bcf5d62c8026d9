// cluster/slurm.sbatch under a real Slurm (Debian's slurmctld, slurmd and munge, started here on one node of
// this machine with 2 CPUs, proctrack/linuxproc and task/none, and stopped after): the job is signalled as a
// time limit would signal it, commits, requeues itself, resumes and completes with the parameters of an
// uninterrupted run. Skipped, saying why, where the daemons cannot run (not root, or not installed).
import Foundation
import Testing

/// A one-node Slurm of this machine in a directory of its own: munged on its own socket and key, slurmctld and
/// slurmd on ports of their own, every state and log file inside `dir`.
final class LocalSlurm {
    static let binaries = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch"]
    static var available: Bool {
        getuid() == 0 && binaries.allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }
    }

    let dir: String
    let host: String
    var environment: [String: String] { ["SLURM_CONF": dir + "/slurm.conf"] }

    init() throws {
        dir = NSTemporaryDirectory() + "llama-train-slurm-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(
            atPath: dir + "/state", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try FileManager.default.createDirectory(atPath: dir + "/spool", withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dir)
        host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "localhost"
        var key = [UInt8](repeating: 0, count: 1024)
        for i in key.indices { key[i] = UInt8.random(in: 0...255) }
        FileManager.default.createFile(
            atPath: dir + "/munge.key", contents: Data(key), attributes: [.posixPermissions: 0o400])
        let port = 17_000 + Int(getpid() % 2000) * 2
        try """
        ClusterName=lt
        SlurmctldHost=\(host)
        SlurmUser=root
        SlurmctldPort=\(port)
        SlurmdPort=\(port + 1)
        AuthType=auth/munge
        AuthInfo=socket=\(dir)/munge.socket
        StateSaveLocation=\(dir)/state
        SlurmdSpoolDir=\(dir)/spool
        SlurmctldPidFile=\(dir)/slurmctld.pid
        SlurmdPidFile=\(dir)/slurmd.pid
        SlurmctldLogFile=\(dir)/slurmctld.log
        SlurmdLogFile=\(dir)/slurmd.log
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SchedulerType=sched/builtin
        SelectType=select/cons_tres
        SelectTypeParameters=CR_CPU
        ReturnToService=2
        MpiDefault=none
        JobAcctGatherType=jobacct_gather/none
        AccountingStorageType=accounting_storage/none
        JobRequeue=1
        NodeName=\(host) CPUs=2 State=UNKNOWN
        PartitionName=lt Nodes=\(host) Default=YES MaxTime=INFINITE State=UP

        """.write(toFile: dir + "/slurm.conf", atomically: true, encoding: .utf8)
        try start(
            "/usr/sbin/munged", "--socket=\(dir)/munge.socket", "--key-file=\(dir)/munge.key",
            "--pid-file=\(dir)/munged.pid", "--log-file=\(dir)/munged.log", "--seed-file=\(dir)/munged.seed", "--force")
        try start("/usr/sbin/slurmctld", "-f", dir + "/slurm.conf", "-i")
        try start("/usr/sbin/slurmd", "-f", dir + "/slurm.conf", "-N", host)
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let state = try run(["sinfo", "-h", "-o", "%T"], environment: environment).stdout
            if state.contains("idle") { return }
            usleep(500_000)
        }
        let logs = ["slurmctld.log", "slurmd.log", "munged.log"].map {
            "\($0):\n" + ((try? String(contentsOfFile: dir + "/" + $0, encoding: .utf8)) ?? "(none)")
        }
        stop()
        throw LocalSlurmError(description: "the node never became idle\n" + logs.joined(separator: "\n"))
    }

    /// Starts a daemon through system(3): Foundation's Process counts a child as running while any descendant
    /// holds the descriptor it watches, and a daemon keeps it for good.
    private func start(_ command: String...) throws {
        let log = "\(dir)/\((command[0] as NSString).lastPathComponent).start"
        let line = command.map { "'\($0)'" }.joined(separator: " ") + " > '\(log)' 2>&1 < /dev/null"
        let status = system("SLURM_CONF='\(dir)/slurm.conf' " + line)
        guard status == 0 else {
            stop()
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw LocalSlurmError(description: "\(command.joined(separator: " ")): status \(status): \(output)")
        }
    }

    /// The job's field `name` as `scontrol show job` gives it (JobState, Restarts, ...).
    func job(_ id: String, _ name: String) throws -> String? {
        let text = try run(["scontrol", "show", "job", id], environment: environment).stdout
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first { $0.hasPrefix(name + "=") }.map {
            String($0.dropFirst(name.count + 1))
        }
    }

    func stop() {
        for daemon in ["slurmd", "slurmctld", "munged"] {
            if let text = try? String(contentsOfFile: "\(dir)/\(daemon).pid", encoding: .utf8),
                let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(pid, SIGTERM)
                for _ in 0..<50 where kill(pid, 0) == 0 { usleep(100_000) }
                kill(pid, SIGKILL)
            }
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }
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
        var state = "", hurried = false
        while Date() < deadline {
            state = try slurm.job(id, "JobState") ?? ""
            if ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"].contains(state) { break }
            // Slurm makes a requeued batch job eligible 121 s later; the test does not wait for that.
            if state == "PENDING", !hurried, try slurm.job(id, "Restarts") == "1" {
                hurried =
                    try run(["scontrol", "update", "JobId=\(id)", "StartTime=now"], environment: environment).status
                    == 0
            }
            usleep(500_000)
        }
        let text = log()
        #expect(state == "COMPLETED", "job \(id) is \(state):\n\(text)")
        #expect(try slurm.job(id, "Restarts") == "1", "\(text)")
        #expect(text.contains("preempted: checkpoint committed, requeueing job \(id)"), "\(text)")
        #expect(text.contains("resumed from"), "\(text)")
        let a = FileManager.default.contents(atPath: dir + "/full/model.safetensors")
        #expect(a != nil && a == FileManager.default.contents(atPath: dir + "/run/final/model.safetensors"), "\(text)")
    }
}
