// SHA-256 against the FIPS 180-4 test vectors, whole and fed in uneven pieces.
import Foundation
import Support
import Testing

@Suite struct SHA256Tests {
    @Test func standardVectors() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(SHA256.hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        var pieces = SHA256()
        var offset = 0
        for size in [1, 63, 64, 65, 1000, 7] + [Int](repeating: 99_000, count: 10) where offset < million.count {
            let end = min(offset + size, million.count)
            pieces.update(Array(million[offset..<end]))
            offset = end
        }
        pieces.update(Array(million[offset...]))
        #expect(pieces.finalize().map { String(format: "%02x", $0) }.joined() == SHA256.hex(million))
    }
}
