import Testing

@testable import MoECore

/// The four-panels-at-a-time one-row product (the routers' decode kernel) against `dot` and a
/// plain sum: every output bit for bit `dot`'s, at ragged shapes (k with and without a tail,
/// below one chunk, an odd number of chunks; outputs not a multiple of 16 or of 64, so whole
/// groups, a partial last panel and leftover panels all run), signed zeros included.
@Suite struct FourPanelRunTests {
    @Test(arguments: [
        (1, 1), (3, 8), (5, 15), (16, 16), (17, 33), (40, 48), (8, 64), (64, 64), (56, 64), (64, 128), (192, 64), (200, 130),
        (257, 128), (80, 12), (64, 40),
    ])
    func fourPanelsEqualDotAndReference(shape: (Int, Int)) {
        let (n, k) = shape
        var g = SeededGenerator(seed: UInt64(n * 1000 + k + 7))
        var w = Tensor(randomNormal: [n, k], std: 1, using: &g)
        for p in 0..<k { w.scalars[p] = -0.0 }  // a row of negative zeros
        let packed = Kernels.FourPanelRows(w)
        let x = Tensor(randomNormal: [1, k], std: 1, using: &g)
        var y = [Float](repeating: .nan, count: n)
        x.scalars.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { packed.multiply(xp.baseAddress!, into: $0.baseAddress!) }
            w.scalars.withUnsafeBufferPointer { wp in
                for j in 0..<n {
                    let expected = Kernels.dot(xp.baseAddress!, wp.baseAddress! + j * k, count: k)
                    #expect(y[j].bitPattern == expected.bitPattern, "output \(j)")
                    var plain: Double = 0
                    for p in 0..<k { plain += Double(xp[p]) * Double(wp[j * k + p]) }
                    #expect(abs(Double(y[j]) - plain) < 1e-4 * Double(k).squareRoot())
                }
            }
        }
        #expect(y[0].bitPattern == Float(0).bitPattern)  // the row of negative zeros sums to +0
    }
}
