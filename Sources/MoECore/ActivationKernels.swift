extension Kernels {
    /// erf on 16 lanes: x·P(x²)/Q(x²), the rational approximation of Eigen's float `erf`
    /// (inputs clamped to ±4, beyond which erf rounds to ±1 in float). Within 8 ulp of the
    /// exact erf over the float range (a test checks it against libm's double `erf`); about 30
    /// vector operations where libm's `erff` is a call per value. NaN stays NaN.
    @inline(__always) public static func erf(_ x: Vector) -> Vector {
        var clamped = x
        clamped.replace(with: Vector(repeating: -4), where: x .< Vector(repeating: -4))
        clamped.replace(with: Vector(repeating: 4), where: x .> Vector(repeating: 4))
        let s = clamped * clamped
        var p = Vector(repeating: -2.726_142_258_013_06e-10)
        p = p * s + Vector(repeating: 2.770_681_424_959_02e-08)
        p = p * s + Vector(repeating: -2.101_024_020_825_08e-06)
        p = p * s + Vector(repeating: -5.692_506_394_623_46e-05)
        p = p * s + Vector(repeating: -7.349_906_303_268_55e-04)
        p = p * s + Vector(repeating: -2.954_599_808_540_25e-03)
        p = p * s + Vector(repeating: -1.609_603_332_624_15e-02)
        var q = Vector(repeating: -1.456_607_184_649_96e-05)
        q = q * s + Vector(repeating: -2.133_740_552_789_05e-04)
        q = q * s + Vector(repeating: -1.682_826_974_382_03e-03)
        q = q * s + Vector(repeating: -7.373_329_167_204_68e-03)
        q = q * s + Vector(repeating: -1.426_473_905_141_89e-02)
        var result = clamped * p / q
        result.replace(with: x, where: x .!= x)  // NaN stays NaN
        return result
    }

    /// Exact (erf) GELU, as PyTorch's `nn.GELU()` default, on 16 lanes: 0.5·x·(1 + erf(x/√2))
    /// with the vector `erf`. The routers' direct paths and the tape's `gelu` both run this,
    /// so the two agree bit for bit.
    @inline(__always) public static func gelu(_ x: Vector) -> Vector {
        Vector(repeating: 0.5) * x * (Vector(repeating: 1) + erf(x * Vector(repeating: 0.707_106_781_186_547_52)))
    }

    /// `f` on `count` floats in place, 16 lanes at a time; the last count mod 16 as one vector
    /// padded with zeros (each lane's result depends on that lane alone, so a value comes out
    /// the same wherever it sits in the buffer).
    @inline(__always) public static func apply(
        _ f: (Vector) -> Vector, to x: UnsafeMutablePointer<Float>, count n: Int
    ) {
        var i = 0
        while i + width <= n {
            store(f(load(x + i)), x + i)
            i += width
        }
        guard i < n else { return }
        storePartial(f(loadPartial(x + i, count: n - i, padding: 0)), x + i, count: n - i)
    }
}
