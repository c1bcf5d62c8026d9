// The training commands' declared options against TrainOptions' own initial values: the command line's
// defaults are the declarations', the library's are Trainer.swift's, and this holds them equal.
import Support
import Testing
import Training

@Suite struct TrainOptionsSettingsTests {
    @Test func declaredDefaultsMatchTrainOptions() {
        let library = TrainOptions()
        var declared = TrainOptions()
        // Start from values no declaration has, so a default that failed to be written would show.
        (declared.threads, declared.logEvery, declared.keepCheckpoints, declared.collectiveTimeout) = (-1, -1, -1, -1)
        (declared.outputDirectory, declared.stopAfter, declared.backgroundSave) = ("x", -1, true)
        declared.noPrefetch = true
        (declared.outputDType, declared.maxShardSize) = ("x", "x")
        (declared.checkpointEveryMinutes, declared.signalLead) = (-1, -1)
        declared.resume = .path("x")
        TrainOptions.settings.setDefaults(&declared)
        for setting in TrainOptions.settings.settings {
            let (ours, theirs) = (setting.text(in: declared), setting.text(in: library))
            #expect(ours == theirs, "--\(setting.name): declared \(ours), TrainOptions() has \(theirs)")
        }
        #expect(
            TrainOptions.settings.names == [
                "threads", "out", "out-dtype", "max-shard-size", "metrics", "log-every", "eval-every", "checkpoint-dir",
                "checkpoint-every", "checkpoint-every-minutes", "signal-lead", "keep", "no-prefetch", "background-save",
                "resume",
                "stop-after",
                "collective-timeout",
            ])
    }
}
