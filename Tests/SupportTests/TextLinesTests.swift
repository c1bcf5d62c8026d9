// The one line reader: LF and CRLF alike, a lone CR kept as data, strict UTF-8 named by line and byte, the
// same from bytes in memory and from a file descriptor.
import Foundation
import Support
import Testing

@Suite struct TextLinesTests {
    func texts(_ bytes: [UInt8]) -> [String] {
        TextLines.lines(bytes, source: "x").map { (try? $0.text.get()) ?? "<bad>" }
    }

    @Test func crlfAndLfGiveTheSameLines() throws {
        let lf = Array("a\nb b\n\nc".utf8), crlf = Array("a\r\nb b\r\n\r\nc".utf8),
            mixed = Array("a\r\nb b\n\r\nc\r\n".utf8)
        #expect(texts(lf) == ["a", "b b", "", "c"] && texts(crlf) == texts(lf) && texts(mixed) == texts(lf))
        #expect(texts(Array("a\rb\n".utf8)) == ["a\rb"], "a lone CR is data")
        #expect(texts(Array("one\n".utf8)) == ["one"] && texts([]) == [])
    }

    @Test func invalidUTF8IsNamedByLineAndByte() throws {
        let bytes: [UInt8] = Array("fine\nab".utf8) + [0xC3, 0x28] + Array("\nlast".utf8)
        let lines = TextLines.lines(bytes, source: "data.jsonl")
        #expect(throws: TextLineError(source: "data.jsonl", line: 2, byte: 3)) { try lines[1].text.get() }
        #expect((try? lines[2].text.get()) == "last")
        #expect("\(TextLineError(source: "s", line: 2, byte: 3))".hasPrefix("s:2:3: not valid UTF-8"))
    }

    /// From a pipe, in chunks: the same lines, and the same error at the same place.
    @Test func descriptorReaderAgrees() throws {
        let good = Array(String(repeating: "line αβγ\r\n", count: 20_000).utf8)
        var seen: [String] = []
        try withPipe(good) { fd in
            try TextLines.forEach(descriptor: fd, source: "pipe") { _, line in seen.append(line) }
        }
        #expect(seen == texts(good) && seen.count == 20_000)
        #expect(throws: TextLineError(source: "pipe", line: 2, byte: 1)) {
            try withPipe(Array("ok\n".utf8) + [0xFF]) { fd in
                try TextLines.forEach(descriptor: fd, source: "pipe") { _, _ in }
            }
        }
    }

    func withPipe(_ bytes: [UInt8], _ body: (Int32) throws -> Void) throws {
        let path = NSTemporaryDirectory() + "lines-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        try body(fd)
    }
}
