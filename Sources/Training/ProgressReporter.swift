// What a person sees of a run: the progress line (rank 0, every --log-every steps) and one JSON Lines row
// per step. The reporter smooths tokens/s, derives MFU against the matmul rate measured at start, and
// appends to the metrics file on resume, dropping rows past the resumed step (they belong to the
// abandoned future of that run).
import Foundation
import Support

/// One step's numbers, as the progress line and the JSON Lines metrics show them.
public struct StepMetrics: Codable, Sendable {
    public var step: Int
    public var steps: Int
    public var loss: Double
    public var lr: Double
    public var gradNorm: Double
    public var tokens: Int
    public var tokensPerS: Double
    public var mfu: Double
    public var elapsedS: Double
    public var etaS: Double
    public var computeS: Double
    public var exposedCommS: Double
    public var commS: Double
    public var optimizerS: Double
    /// Wall time of the whole step: data, compute, communication, optimizer.
    public var stepS: Double
    public var skipped: Bool
    /// The validation loss after this step, its target tokens and seconds (absent where none was taken).
    public var valLoss: Double?
    public var valTokens: Int?
    public var valS: Double?

    enum CodingKeys: String, CodingKey {
        case step, steps, loss, lr, gradNorm = "grad_norm", tokens, tokensPerS = "tokens_per_s", mfu
        case elapsedS = "elapsed_s", etaS = "eta_s", computeS = "compute_s", exposedCommS = "exposed_comm_s"
        case commS = "comm_s", optimizerS = "optimizer_s", stepS = "step_s", skipped
        case valLoss = "val_loss", valTokens = "val_tokens", valS = "val_s"
    }
}

final class ProgressReporter {
    let steps: Int
    let tokensPerStep: Int
    /// Model FLOPs per token over the rank count times the matmul rate: the MFU denominator per token/s.
    let flopsPerTokenPerRank: Double
    let matmulFlops: Double
    let logEvery: Int
    let log: ((String) -> Void)?
    private let metrics: MetricsWriter?
    private let start = Date()
    private let firstStep: Int
    private var smoothedStep: Double?

    init(
        steps: Int, firstStep: Int, tokensPerStep: Int, flopsPerToken: Double, ranks: Int, matmulGflops: Double,
        logEvery: Int, metricsPath: String?, isRoot: Bool, log: @escaping (String) -> Void
    ) throws {
        self.steps = steps
        self.firstStep = firstStep
        self.tokensPerStep = tokensPerStep
        flopsPerTokenPerRank = flopsPerToken / Double(ranks)
        matmulFlops = matmulGflops * 1e9
        self.logEvery = logEvery
        self.log = isRoot ? log : nil
        metrics = try metricsPath.flatMap { isRoot ? try MetricsWriter(path: $0, keepingStepsThrough: firstStep) : nil }
    }

    /// Records step k (0-based) and prints the progress line when due.
    func report(
        step k: Int, loss: Double, lr: Double, gradNorm: Double, stepStart: Date, computeEnd: Date,
        optimizerStart: Date, optimizerEnd: Date, exposedComm: Double, comm: Double, skipped: Bool,
        validation: ValidationResult? = nil
    ) throws -> StepMetrics {
        let end = Date()
        let stepSeconds = end.timeIntervalSince(stepStart) - (validation?.seconds ?? 0)
        // The first step pays for planning the arena and warming caches; it does not enter the average.
        if k > firstStep { smoothedStep = smoothedStep.map { 0.9 * $0 + 0.1 * stepSeconds } ?? stepSeconds }
        let perStep = smoothedStep ?? stepSeconds
        let tokensPerS = Double(tokensPerStep) / perStep
        let m = StepMetrics(
            step: k + 1, steps: steps, loss: loss, lr: lr, gradNorm: gradNorm, tokens: (k + 1) * tokensPerStep,
            tokensPerS: tokensPerS, mfu: flopsPerTokenPerRank * tokensPerS / matmulFlops,
            elapsedS: end.timeIntervalSince(start), etaS: perStep * Double(steps - k - 1),
            computeS: computeEnd.timeIntervalSince(stepStart), exposedCommS: exposedComm, commS: comm,
            optimizerS: optimizerEnd.timeIntervalSince(optimizerStart), stepS: stepSeconds, skipped: skipped,
            valLoss: validation?.loss, valTokens: validation?.tokens, valS: validation?.seconds)
        try metrics?.append(m)
        if (k + 1) % logEvery == 0 || k == firstStep || k + 1 == steps || validation != nil {
            log?(Self.progressLine(m))
        }
        return m
    }

    /// step 12/200 | loss 5.4321 | lr 3.00e-04 | grad norm 1.234 | 12,345 tok/s | MFU 0.61 | comm 40 ms, 3 exposed | 1m02s elapsed, ETA 3m10s
    /// (and "| val loss 5.5012" on a step that took one)
    public static func progressLine(_ m: StepMetrics) -> String {
        let width = String(m.steps).count
        return String(
            format:
                "step %*d/%d | loss %.4f%@ | lr %.2e | grad norm %.3f | %@ tok/s | MFU %.2f | comm %.0f ms, %.0f exposed | %@ elapsed, ETA %@%@",
            width, m.step, m.steps, m.loss, m.valLoss.map { String(format: " | val loss %.4f", $0) } ?? "", m.lr,
            m.gradNorm, groupedThousands(m.tokensPerS), m.mfu, m.commS * 1e3, m.exposedCommS * 1e3,
            duration(m.elapsedS), duration(m.etaS), m.skipped ? " | SKIPPED" : "")
    }

    static func duration(_ s: Double) -> String {
        let total = Int(s.rounded())
        return total >= 3600
            ? String(format: "%dh%02dm", total / 3600, total % 3600 / 60)
            : String(format: "%dm%02ds", total / 60, total % 60)
    }

    static func groupedThousands(_ x: Double) -> String {
        let digits = String(Int(x.rounded()))
        var out = ""
        for (i, c) in digits.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return String(out.reversed())
    }
}

/// JSON Lines metrics, one object per step, flushed as written (rank 0 only). A resumed run keeps the rows of
/// steps up to the one it resumed from and appends after them.
final class MetricsWriter {
    private let handle: FileHandle
    private let path: String
    private let encoder = JSONEncoder()

    init(path: String, keepingStepsThrough lastKept: Int) throws {
        encoder.outputFormatting = [.sortedKeys]
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        do {
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            var kept = Data()
            if lastKept == 0 {
                // A fresh run: an empty file, no fsync needed (nothing to lose).
                guard FileManager.default.createFile(atPath: path, contents: nil) else {
                    throw FileError(path: path, message: "cannot create the metrics file")
                }
            } else if let old = FileManager.default.contents(atPath: path) {
                // Rows of steps after the resumed one, and a torn last row, are dropped; so is a line that is
                // not UTF-8 or not JSON (this file is ours, and nothing else reads it back).
                for line in TextLines.lines([UInt8](old), source: path) {
                    guard case let .success(text) = line.text,
                        let step = JSONLines.object(text)?["step"] as? Int, step <= lastKept
                    else { continue }
                    kept += Data(text.utf8) + Data("\n".utf8)
                }
            }
            if lastKept > 0 { try AtomicFile.write(kept, to: path) }
        } catch {
            throw FileError(path: path, message: "cannot write the metrics file: \(plainText(error))")
        }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw FileError(path: path, message: "cannot open the metrics file for writing")
        }
        h.seekToEndOfFile()
        handle = h
    }

    func append(_ metrics: StepMetrics) throws {
        do {
            try handle.write(contentsOf: encoder.encode(metrics) + Data("\n".utf8))
        } catch {
            // A full disk says "No space left on device" and nothing else: name the file and the step.
            throw FileError(
                path: path,
                message:
                    "cannot append step \(metrics.step)'s metrics: \(plainText(error)); free space or drop --metrics, then relaunch to resume"
            )
        }
    }
}
