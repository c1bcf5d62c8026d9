// The llama-train command line as a library: the command table, dispatch and exit codes, so that the
// executable (Sources/Launcher) and the tests' fault-injecting twin (Tests/FaultInjection) run the same code.
//
// Exit codes: 0 done; 1 the work failed (bad file, diverged run, rank failure); 2 usage error (a flag, a
// value); 75 (EX_TEMPFAIL) a training run stopped before its schedule's end, by preemption or --stop-after,
// with its checkpoint committed: relaunch to resume.
import Configuration
import Distributed
import Foundation
import Support
import Training

/// Thrown by a training command that stopped before its schedule's end with a checkpoint committed.
struct StoppedEarly: Error {}

public enum LlamaTrain {
    static let commands: [CommandSpec] = [
        BenchCommand.spec,
        TokenizerCommands.trainSpec, TokenizerCommands.benchSpec, TokenizerCommands.tokenizeSpec,
        TokenizerCommands.detokenizeSpec,
        PrepareCommand.spec,
        PretrainCommand.spec, FineTuneCommands.sftSpec, FineTuneCommands.rewardSpec, FineTuneCommands.dpoSpec,
        PPOCommand.spec,
        FineTuneCommands.scoreSpec, RejectionSampleCommand.spec,
        ExportCommand.spec, DataCommands.formatSpec, DataCommands.statsSpec,
        ToolCommands.planSpec, ToolCommands.plotSpec, GenerateCommand.spec, ScoreCommand.spec,
        EvalCommand.spec,
        AllreduceBench.spec, MPISelfTest.spec,
    ]

    static var usage: String {
        "usage: llama-train <command> [flags]; llama-train <command> --help for its flags\n\ncommands:\n"
            + commands.map {
                "  \($0.name.padding(toLength: 16, withPad: " ", startingAt: 0)) \($0.summary.split(separator: "\n").first ?? "")"
            }
            .joined(separator: "\n")
    }

    static func fail(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data("llama-train: error: \(message)\n".utf8))
        exit(code)
    }

    /// Under mpirun an error on one rank must end the whole job, never leave the others waiting in a collective.
    static func abortJobIfParallel(_ message: String, code: Int32) {
        if Communicator.isInitialized, let world = try? Communicator.world(), world.size > 1 {
            world.abort("llama-train: error: \(message)", code: code)
        }
    }

    /// oneDNN's OpenMP threads (libgomp) spin for a while after every product by default, and on a rank's few
    /// cores that spinning takes the core our own threads need for attention and the row-wise kernels (2
    /// threads: 1.49× one thread passive against 1.38× spinning, bench-small in bf16). libgomp reads
    /// OMP_WAIT_POLICY once, when it loads, so a process started without it sets it and replaces itself before
    /// anything else runs: with its own resolved path, not /proc/self/exe, so ps, top, Slurm and the OOM
    /// killer name it by its name.
    public static func ensurePassiveOpenMP() {
        guard ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] == nil else { return }
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
        guard let path = realpath("/proc/self/exe", nil) else { return }
        execv(path, CommandLine.unsafeArgv)  // returns only on failure: then run as we are
        free(path)
    }

    /// Runs the command named by `arguments` (without the program's name) and exits with its code.
    public static func main(_ arguments: [String]) -> Never {
        var arguments = ArraySlice(arguments)
        let first = arguments.popFirst() ?? "help"
        if ["help", "--help", "-h"].contains(first) {
            print(usage)
            exit(0)
        }
        // Two-word commands ("tokenizer train", "reward score") first, then one word.
        let second = arguments.first.map { "\(first) \($0)" }
        guard let spec = commands.first(where: { $0.name == second }) ?? commands.first(where: { $0.name == first })
        else {
            let subcommands = commands.filter { $0.name.hasPrefix(first + " ") }.map { $0.name }
            fail(
                subcommands.isEmpty
                    ? "unknown command '\(first)'\n\(usage)"
                    : "'\(first)' needs a subcommand: \(subcommands.joined(separator: ", "))", code: 2)
        }
        if spec.name.contains(" ") { arguments.removeFirst() }
        if arguments.contains("--help") || arguments.contains("-h") {
            print(spec.help)
            exit(0)
        }
        // Training commands catch SIGTERM and SIGUSR1 from the first instant, so a preemption signal never kills a
        // run before its handler exists; the loop stops with a checkpoint at the next micro-step boundary.
        if TrainingStage(rawValue: spec.name) != nil { PreemptionSignal.shared.install() }
        do {
            var args = try Arguments(arguments, spec: spec)
            defer { PreemptionSignal.shared.uninstall() }
            try spec.run(&args)
            if Communicator.isInitialized { Communicator.finalize() }
        } catch is StoppedEarly {
            if Communicator.isInitialized { Communicator.finalize() }
            exit(75)
        } catch let error as UsageError {
            abortJobIfParallel("\(error)", code: 2)
            fail("\(error)", code: 2)
        } catch {
            abortJobIfParallel(plainText(error), code: 1)
            fail(plainText(error), code: 1)
        }
        exit(0)
    }
}
