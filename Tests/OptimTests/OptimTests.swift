// AdamW and clipping semantics that the reference fixture alone would not isolate.
import Model
import Optim
import Testing

@Suite struct ClippingTests {
    @Test func normBelowTheLimitLeavesGradientsAlone() {
        let g = FloatBuffer(count: 3)
        g[0] = 0.3
        g[1] = 0.4
        g[2] = 0
        let norm = GradientClipping.clip(g, maxNorm: 1.0)
        #expect(abs(norm - 0.5) < 1e-7)
        #expect(g.array == [0.3, 0.4, 0])
    }

    @Test func normAboveTheLimitScalesAsPyTorch() {
        let g = FloatBuffer(count: 2)
        g[0] = 3
        g[1] = 4
        let norm = GradientClipping.clip(g, maxNorm: 1.0)
        #expect(norm == 5)
        let factor = Float(1.0 / (5.0 + 1e-6))
        #expect(g.array == [3 * factor, 4 * factor])
    }
}

@Suite struct AdamWTests {
    static let config = LlamaConfig(dim: 4, nLayers: 1, nHeads: 2, vocabSize: 3, ffnHiddenSize: 4, maxSeqLen: 4)

    /// With zero gradients only decoupled weight decay moves a parameter, and only on matrices.
    @Test func weightDecayOnlyOnMatrices() {
        let layout = ParameterLayout(config: Self.config)
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        params.pointer.update(repeating: 1, count: layout.count)
        let adamw = AdamW(layout: layout)
        adamw.update(parameters: params, gradients: grads, learningRate: 0.5)
        for spec in layout.tensors {
            let expected: Float = spec.decays ? 1 - 0.5 * 0.1 : 1
            #expect(params.slice(spec.offset, spec.count).allSatisfy { $0 == expected }, "\(spec.name)")
        }
        #expect(!layout.finalNorm.decays && layout.embedding.decays && layout.head(.lm)!.decays)
    }

    /// Bias correction makes the first step lr · sign(g) (up to eps) whatever the gradient's size.
    @Test func firstStepIsLearningRateTimesSign() {
        let layout = ParameterLayout(config: Self.config)
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        for i in 0..<layout.count { grads[i] = i % 2 == 0 ? 3 : -0.02 }
        let adamw = AdamW(layout: layout, settings: AdamWSettings(weightDecay: 0))
        adamw.update(parameters: params, gradients: grads, learningRate: 1e-3)
        #expect(adamw.step == 1)
        for i in 0..<layout.count {
            let g = Double(grads[i])
            let expected = -1e-3 * g / (abs(g) + 1e-5)
            #expect(abs(Double(params[i]) - expected) < 1e-9, "index \(i)")
        }
    }
}
