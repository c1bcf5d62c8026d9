// The run configuration: batch arithmetic and its refusals, and the validation of every field.
import Configuration
import Foundation
import Model
import Testing

@Suite struct BatchArithmeticTests {
    @Test func accumulationStepsAndRefusals() throws {
        var t = TrainSettings()
        t.seqLen = 4096
        t.microBatch = 2
        #expect(try t.accumulationSteps(worldSize: 64) == 8)  // 1024 sequences = 64 ranks × 2 × 8
        #expect(try t.accumulationSteps(worldSize: 1) == 512)
        #expect { try t.accumulationSteps(worldSize: 3) } throws: { error in
            let text = "\(error)"
            return text.contains("micro_batch") && text.contains("rank counts that work with micro_batch 2: 1, 2, 4")
        }
        t.microBatch = 3
        #expect { try t.accumulationSteps(worldSize: 2) } throws: { "\($0)".contains("values that work on 2 rank(s): 1, 2, 4, 8") }
    }
}
