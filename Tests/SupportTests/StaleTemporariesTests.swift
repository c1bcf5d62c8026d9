// A killed writer's temporary files: removed by the next run (this host, a pid that no longer runs), said in
// the log; a live writer's and another host's are left alone.
import Foundation
import Support
import Testing

@Suite struct StaleTemporariesTests {
    @Test func onlyADeadLocalWritersAreRemoved() throws {
        let dir = NSTemporaryDirectory() + "stale-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let here = String(cString: host)
        let names = [
            "model.safetensors.tmp-999999999@\(here)", "config.json.tmp-\(getpid())@\(here)",
            "shard.bin.tmp-999999999@another-node", "notes.txt",
        ]
        for name in names { try Data("x".utf8).write(to: URL(fileURLWithPath: dir + "/" + name)) }
        var log: [String] = []
        let removed = AtomicFile.removeStaleTemporaries(in: dir) { log.append($0) }
        #expect(removed == [names[0]])
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == Set(names.dropFirst()))
        #expect(log.count == 1 && log[0].contains(names[0]) && log[0].contains(dir))
        // A real write leaves nothing behind, and its temporary carries this host.
        try AtomicFile.write(Data("y".utf8), to: dir + "/written")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.contains(".tmp-") }.count == 2)
    }
}
