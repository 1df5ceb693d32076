import Foundation
import Synchronization
import Testing

@testable import MoECore

/// The packed copies the kernels read: where they start in memory, when a many-row product's
/// panels are kept, and that a product gives the same values whichever copy it reads.
@Suite struct PackedCopyTests {
    /// Every packed copy starts on a cache line, so no 16-float load straddles two lines, at
    /// shapes from a router's 8 outputs to a ragged 257 × 130.
    @Test(arguments: [(8, 64), (64, 128), (192, 64), (257, 130), (1, 1)])
    func packedCopiesStartOnACacheLine(shape: (Int, Int)) {
        let (n, k) = shape
        var g = SeededGenerator(seed: UInt64(n + k))
        let w = Tensor(randomNormal: [n, k], std: 1, using: &g)
        #expect(Int(bitPattern: Kernels.PackedRows(w).storage) % 64 == 0)
        #expect(Int(bitPattern: Kernels.FourPanelRows(w).storage) % 64 == 0)
        #expect(Int(bitPattern: Kernels.PackedPanels(w).packed.storage) % 64 == 0)
        for count in [1, 3, 17, 1000] {
            let floats = Kernels.allocateLineAligned(count)
            #expect(Int(bitPattern: floats) % 64 == 0)
            floats.deallocate()
        }
    }

    /// A built-once copy asked for `onAsk: 3` is nil twice, then built and kept; `release`
    /// starts the count again.
    @Test func builtOnceBuildsOnTheAskItIsTold() {
        let cache = BuiltOnce<Kernels.PackedRows>()
        let w = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        var builds = 0
        func ask() -> Kernels.PackedRows? {
            cache.value(onAsk: 3) {
                builds += 1
                return Kernels.PackedRows(w)
            }
        }
        #expect(ask() == nil && ask() == nil && cache.ifBuilt == nil)
        let third = ask()
        #expect(third != nil && ask() === third && builds == 1)
        cache.release()
        #expect(cache.ifBuilt == nil && ask() == nil && ask() == nil && ask() != nil && builds == 2)
    }

    /// Threads asking at once, before anything is built, get one copy, built once; a lookup
    /// once built reads it without the lock.
    @Test func builtOnceBuildsOnceForThreadsAskingAtOnce() {
        let cache = BuiltOnce<Kernels.PackedRows>()
        let builds = Mutex(0)
        let w = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        let seen = Mutex<[ObjectIdentifier]>([])
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            let copy = cache.value {
                builds.withLock { $0 += 1 }
                return Kernels.PackedRows(w)
            }
            seen.withLock { $0.append(ObjectIdentifier(copy)) }
        }
        #expect(builds.withLock { $0 } == 1)
        #expect(Set(seen.withLock { $0 }).count == 1)
        #expect(cache.ifBuilt.map(ObjectIdentifier.init) == seen.withLock { $0.first })
    }

    /// A weight's many-row products before its panels are kept (each packing its own) and
    /// after (reading the kept copy) give the same values, bit for bit, on one core and two.
    @Test(arguments: [1, 2])
    func keptPanelsGiveTheSameProducts(threads: Int) {
        var g = SeededGenerator(seed: 9)
        let weight = Parameter("w", value: Tensor(randomNormal: [70, 48], std: 1, using: &g))
        let x = Tensor(randomNormal: [4 * Kernels.microRows + 1, 48], std: 1, using: &g)
        let products = (0..<(Parameter.productsBeforePanelsKept + 2)).map { _ in linear(x, weight, threads: threads) }
        for product in products.dropFirst() {
            #expect(product.scalars.map(\.bitPattern) == products[0].scalars.map(\.bitPattern))
        }
    }
}
