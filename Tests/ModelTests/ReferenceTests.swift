// The model against Hugging Face transformers: logits, loss, every gradient, the gradient norm and the
// parameters after one and two AdamW + clipping steps, from a float64 dump (see shared/fixtures/README.md).
//
// REFERENCE_FIXTURE names the dump directory (default ../shared/fixtures/llama-tiny beside this package).
// Nothing here is specific to that model: sizes, GQA ratio, theta and eps all come from its config.json.
import Foundation
import Model
import Optim
import Testing

/// The fixture directory: $REFERENCE_FIXTURE (relative to the working directory) or the shared default.
func referenceFixtureDirectory() -> String {
    if let path = ProcessInfo.processInfo.environment["REFERENCE_FIXTURE"], !path.isEmpty {
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return packageRoot.appendingPathComponent("../shared/fixtures/llama-tiny").standardizedFileURL.path
}

/// Compares `actual` with `expected` and records one issue per tensor that fails, naming it with its
/// largest difference. `tolerance(expectedMaxAbs)` gives the allowed absolute difference for the tensor.
@discardableResult
func expectClose(
    _ name: String, _ actual: UnsafeBufferPointer<Float>, _ expected: [Float],
    relativeTo mode: ToleranceMode, report: inout [String]
) -> Bool {
    #expect(actual.count == expected.count, "\(name): \(actual.count) values, expected \(expected.count)")
    guard actual.count == expected.count else { return false }
    var maxDiff: Float = 0, maxAbs: Float = 0, worst = 0, violations = 0
    for i in 0..<expected.count {
        maxAbs = max(maxAbs, abs(expected[i]))
    }
    for i in 0..<expected.count {
        let diff = abs(actual[i] - expected[i])
        if !(diff <= mode.allowed(expected: expected[i], maxAbs: maxAbs)) { violations += 1 }
        if !(diff <= maxDiff) {
            maxDiff = diff
            worst = i
        }
    }
    report.append(String(format: "%@ max |diff| %.3g (max |expected| %.3g)", name, maxDiff, maxAbs))
    #expect(
        violations == 0,
        "\(name): \(violations) of \(expected.count) values out of tolerance \(mode); worst at \(worst): got \(actual[worst]), expected \(expected[worst]), |diff| \(maxDiff)"
    )
    return violations == 0
}

enum ToleranceMode: CustomStringConvertible {
    /// |a − e| ≤ rtol · |e| + atol
    case relative(Float, atol: Float)
    /// |a − e| ≤ fraction · max|e| over the tensor
    case ofMaxAbs(Float)
    /// |a − e| ≤ atol
    case absolute(Float)

    func allowed(expected: Float, maxAbs: Float) -> Float {
        switch self {
        case let .relative(r, atol): r * abs(expected) + atol
        case let .ofMaxAbs(f): f * maxAbs
        case let .absolute(a): a
        }
    }

    var description: String {
        switch self {
        case let .relative(r, atol): "relative \(r) (+\(atol) absolute)"
        case let .ofMaxAbs(f): "\(f) of the tensor's max |value|"
        case let .absolute(a): "absolute \(a)"
        }
    }
}

@Suite struct ReferenceTests {
    @Test func referenceMatchesHuggingFaceThroughTwoAdamWSteps() throws {
        let directory = referenceFixtureDirectory()
        let model = try HuggingFace.loadModel(directory: directory, purpose: .training(.none))
        let expected = try SafeTensorsFile(path: directory + "/expected.safetensors")
        let shape = try expected.info("inputs").shape
        try #require(shape.count == 2, "inputs must be [B, T], got \(shape)")
        let (B, T) = (shape[0], shape[1])
        let tokens = try expected.int32s("inputs"), targets = try expected.int32s("targets")
        var report: [String] = []

        // 1. Forward: logits and loss. The fixture's logits are float64 rounded to float32; ours are float32
        //    sums of O(dim) products, so 1e-4 relative with a 1e-5 floor for logits near zero.
        let forward = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
        expectClose(
            "logits", model.logits, try expected.floats("logits"), relativeTo: .relative(1e-4, atol: 1e-5),
            report: &report)
        let loss = try expected.floats("loss")[0]
        #expect(abs(Float(forward.meanLoss) - loss) <= 1e-4 * abs(loss), "loss \(forward.meanLoss), expected \(loss)")

        // 2. Backward: every gradient within 1e-3 of its own max |value|, and the global norm.
        model.gradients.zero()
        try model.backward(lossScale: 1 / Float(forward.targetCount))
        for spec in model.layout.tensors {
            expectClose(
                "grad." + spec.name, UnsafeBufferPointer(model.gradients.slice(spec.offset, spec.count)),
                try expected.floats("grad." + spec.name, expectedShape: spec.shape),
                relativeTo: .ofMaxAbs(1e-3), report: &report)
        }
        let norm = GradientClipping.sumOfSquares(model.gradients).squareRoot()
        let expectedNorm = Double(try expected.floats("grad_norm")[0])
        #expect(abs(norm - expectedNorm) <= 1e-4 * expectedNorm, "grad norm \(norm), expected \(expectedNorm)")

        // 3. Two AdamW steps (lr 1e-3, Llama 2's betas, eps and decay) with clipping to 1.0, same batch.
        let optimizer = AdamW(layout: model.layout)
        for step in 1...2 {
            if step == 2 {
                model.gradients.zero()
                let again = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
                let lossAfter = try expected.floats("loss_after_step1")[0]
                #expect(
                    abs(Float(again.meanLoss) - lossAfter) <= 1e-4 * abs(lossAfter),
                    "loss after step 1: \(again.meanLoss), expected \(lossAfter)")
                try model.backward(lossScale: 1 / Float(again.targetCount))
            }
            GradientClipping.clip(model.gradients, maxNorm: 1.0)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-3)
            for spec in model.layout.tensors {
                expectClose(
                    "step\(step)." + spec.name,
                    UnsafeBufferPointer(model.parameters.slice(spec.offset, spec.count)),
                    try expected.floats("step\(step)." + spec.name, expectedShape: spec.shape),
                    relativeTo: .absolute(1e-5), report: &report)
            }
        }
        print("Reference comparison against \(directory):\n  " + report.joined(separator: "\n  "))
    }

    /// The same comparison with bf16 matmuls (oneDNN), where the CPU runs them. Tolerances from bf16's 8-bit
    /// mantissa: u = 2^-8 is the relative rounding of each input, so one product's output moves by about 2u
    /// of its scale (both inputs rounded, fp32 accumulation adds nothing comparable), and errors of
    /// independent roundings add in quadrature over the M = 4L + 1 matmuls in the chain to the logits:
    /// 2u·sqrt(M). Logits and gradients get 4u·sqrt(M) of their tensor's max |value| (2× that estimate), the
    /// loss 2u·sqrt(M) relative. AdamW divides each gradient by its own running scale, so an element whose
    /// gradient is mostly rounding can move by up to lr per step in either direction: parameters within
    /// 2·lr·step of the float64 values. The fp32 path above keeps its own tolerances.
    @Test(.enabled(if: PrecisionChoice.nativeBF16, "needs a CPU with AVX-512 BF16 or AMX"))
    func referenceMatchesHuggingFaceInBF16() throws {
        let directory = referenceFixtureDirectory()
        let model = try HuggingFace.loadModel(directory: directory, purpose: .training(.none))
        model.precision = .bf16
        let expected = try SafeTensorsFile(path: directory + "/expected.safetensors")
        let shape = try expected.info("inputs").shape
        let (B, T) = (shape[0], shape[1])
        let tokens = try expected.int32s("inputs"), targets = try expected.int32s("targets")
        let u: Float = 1.0 / 256, matmuls = Float(4 * model.config.nLayers + 1)
        let chain = 2 * u * matmuls.squareRoot()
        var report: [String] = []
        let forward = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
        expectClose(
            "bf16 logits", model.logits, try expected.floats("logits"), relativeTo: .ofMaxAbs(2 * chain),
            report: &report)
        let loss = try expected.floats("loss")[0]
        #expect(
            abs(Float(forward.meanLoss) - loss) <= chain * abs(loss), "bf16 loss \(forward.meanLoss), expected \(loss)")
        model.gradients.zero()
        try model.backward(lossScale: 1 / Float(forward.targetCount))
        for spec in model.layout.tensors {
            expectClose(
                "bf16 grad." + spec.name, UnsafeBufferPointer(model.gradients.slice(spec.offset, spec.count)),
                try expected.floats("grad." + spec.name, expectedShape: spec.shape), relativeTo: .ofMaxAbs(2 * chain),
                report: &report)
        }
        let optimizer = AdamW(layout: model.layout)
        for step in 1...2 {
            if step == 2 {
                model.gradients.zero()
                let again = try model.forward(tokens: tokens, targets: targets, batch: B, seqLen: T)
                try model.backward(lossScale: 1 / Float(again.targetCount))
            }
            GradientClipping.clip(model.gradients, maxNorm: 1.0)
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-3)
            for spec in model.layout.tensors {
                expectClose(
                    "bf16 step\(step)." + spec.name,
                    UnsafeBufferPointer(model.parameters.slice(spec.offset, spec.count)),
                    try expected.floats("step\(step)." + spec.name, expectedShape: spec.shape),
                    relativeTo: .absolute(2 * 1e-3 * Float(step)), report: &report)
            }
        }
        print("bf16 reference comparison (chain tolerance \(chain)):\n  " + report.joined(separator: "\n  "))
    }
}
