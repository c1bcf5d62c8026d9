// The launch kit: the scripts parse, the launcher builds the mpirun line it documents, and (as root) a real
// two-host run over TCP between network namespaces equals the single-host run, and survives a cut link.
import Foundation
import Testing

/// Root, and allowed to make network namespaces here (a container may withhold CAP_NET_ADMIN).
let canMakeNamespaces: Bool = {
    guard getuid() == 0, let r = try? run(["ip", "netns", "add", "lt-probe-\(getpid())"]), r.status == 0 else {
        return false
    }
    _ = try? run(["ip", "netns", "del", "lt-probe-\(getpid())"])
    return true
}()

@Suite(.serialized) struct ClusterTests {
    @Test func scriptsParse() throws {
        for script in [
            "cluster/slurm.sbatch", "cluster/launch.sh", "cluster/netns.sh", "cluster/netns-agent.sh",
            "cluster/bench-scaling.sh", "cluster/lab-scaling.sh",
        ] {
            let r = try run(["bash", "-n", packageRoot + "/" + script])
            #expect(r.status == 0, "\(script): \(r.stderr)")
        }
        let slurm = try String(contentsOfFile: packageRoot + "/cluster/slurm.sbatch", encoding: .utf8)
        #expect(
            slurm.contains("#SBATCH --signal=B:USR1@120") && slurm.contains("#SBATCH --requeue")
                && slurm.contains("--resume auto"))
    }

    @Test func launchScriptBuildsTheDocumentedCommand() throws {
        let r = try run([
            packageRoot + "/cluster/launch.sh", "--hostfile", packageRoot + "/cluster/hostfile.example", "--threads",
            "4",
            "--iface", "eth0", "--dry-run", "pretrain", "--config", "configs/llama2-7b.json",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        for part in [
            "--hostfile", "-np 8", "--map-by slot:PE=4", "--bind-to core", "OPENBLAS_NUM_THREADS=4",
            "btl_tcp_if_include eth0",
            "pretrain --config configs/llama2-7b.json --threads 4",
        ] {
            #expect(r.stdout.contains(part), "missing \(part) in \(r.stdout)")
        }
    }

    @Test(.enabled(if: canMakeNamespaces, "needs root and permission to create network namespaces"))
    func twoNamespaceHostsEqualOneHost() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 3)
        _ = try pretrain(mpirun2, config, ["--out", dir + "/local"])
        let remote = try run(
            [
                packageRoot + "/cluster/netns.sh", "run", "2", "--", "mpirun", "--hostfile", "/tmp/lt-hostfile", "-np",
                "2",
                tool, "pretrain", "--config", config, "--out", dir + "/netns",
            ], timeout: 180)
        #expect(remote.status == 0, "\(remote.stderr)")
        #expect(
            FileManager.default.contents(atPath: dir + "/local/model.safetensors")
                == FileManager.default.contents(atPath: dir + "/netns/model.safetensors"),
            "two ranks sum two gradients the same way over TCP as over shared memory")
        let leftovers = try run(["ip", "netns", "list"]).stdout
        #expect(!leftovers.contains("lt-"), "namespaces left behind: \(leftovers)")
    }

    /// RATE shapes the links: 8 MB allreduced between two hosts at 100 Mbit/s takes at least 8 MB / 12.5 MB/s
    /// (the ring sends half each way, twice), where the unshaped veth takes milliseconds; the interfaces'
    /// counters show the bytes.
    @Test(.enabled(if: canMakeNamespaces, "needs root and permission to create network namespaces"))
    func aLinkRateHoldsAndTheCountersCountIt() throws {
        let script = """
            mpirun --hostfile /tmp/lt-hostfile -np 2 \(try toolPath()) allreduce-bench --floats 2000000 --iters 2 | tail -n 1
            \(packageRoot)/cluster/netns.sh counters
            """
        let r = try run(
            [packageRoot + "/cluster/netns.sh", "run", "2", "--", "bash", "-c", script], timeout: 120,
            environment: ["RATE": "100mbit"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
        let bench = try #require(lines.first { $0["seconds"] != nil }, "\(r.stdout)")
        let seconds = (bench["seconds"] as? NSNumber)?.doubleValue ?? 0
        #expect(seconds > 0.55 && seconds < 3, "8 MB at 100 Mbit/s took \(seconds) s")
        let sent = lines.compactMap { ($0["tx_bytes"] as? NSNumber)?.intValue }
        #expect(sent.count == 2 && sent.allSatisfy { $0 > 8_000_000 }, "counters: \(sent)")
    }

    @Test(.enabled(if: canMakeNamespaces, "needs root and permission to create network namespaces"))
    func cutLinkEndsTheJobAndTheRunResumes() throws {
        let tool = try toolPath()
        let dir = try scratch()
        let config = try writeCheckpointConfig(dir, steps: 100_000)
        let script = """
            timeout -s KILL 100 mpirun --hostfile /tmp/lt-hostfile -np 2 \(tool) pretrain --config \(config) --checkpoint-dir \(dir)/ck --checkpoint-every 20 \
                --collective-timeout 2 --log-every 100000 &
            job=$!
            sleep 6
            ip -n lt-host1 link set lt-h1 down
            start=$(date +%s)
            wait $job; status=$?
            echo "ended with $status after $(( $(date +%s) - start )) s"
            """
        let r = try run([packageRoot + "/cluster/netns.sh", "run", "2", "--", "bash", "-c", script], timeout: 120)
        _ = try? run(["pkill", "-9", "-f", config])
        let output = r.stdout + r.stderr
        #expect(output.contains("watchdog") && output.contains("never arrived"), "\(output)")
        let seconds =
            Int(
                output.split(separator: "\n").last { $0.hasPrefix("ended with") }?.split(separator: " ").dropLast().last
                    ?? "999") ?? 999
        // Watchdog timeout 2 s and grace 1 s, well before OpenMPI itself gives up on the lost host's daemon
        // (about 6 s with cluster/netns.sh's keepalives), so the watchdog's message is what ends the job.
        #expect(!output.contains("ended with 0") && seconds <= 40, "\(output)")
        // The last committed checkpoint resumes, here on one host.
        let resumed = try run(
            mpirun2 + [
                tool, "pretrain", "--config", config, "--checkpoint-dir", dir + "/ck", "--stop-after", "1",
                "--log-every", "1000",
            ])
        #expect(resumed.stdout.contains("resumed from \(dir)/ck/step-"), "\(resumed.stdout)\(resumed.stderr)")
    }
}
