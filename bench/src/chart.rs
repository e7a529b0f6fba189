//! The chart beside the report: per-packet cost by policy size, as SVG.

use crate::scaling::Scaling;

/// A bar chart of the varied-source per-packet cost (floor + classification) by policy size.
pub fn chart(results: &[Scaling]) -> String {
    let (width, height, left, bottom, top) = (760.0, 360.0, 70.0, 50.0, 40.0);
    type Series = (&'static str, &'static str, fn(&Scaling) -> f64);
    let series: [Series; 3] = [
        ("XDP_DROP floor", "#9e9e9e", |r| r.floor),
        ("IPv4, varied sources", "#1f77b4", |r| {
            r.floor + r.varied[0].max(r.varied[1])
        }),
        ("IPv6, varied sources", "#d62728", |r| {
            r.floor + r.varied[2].max(r.varied[3])
        }),
    ];
    let max = results
        .iter()
        .flat_map(|r| series.iter().map(move |(_, _, f)| f(r)))
        .fold(1.0, f64::max);
    let plot_h = height - bottom - top;
    let group_w = (width - left - 20.0) / results.len().max(1) as f64;
    let bar_w = group_w / (series.len() as f64 + 1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">Per-packet cost with \
         varied sources (ns), by prefixes per family</text>\n"
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let y = height - bottom - plot_h * f64::from(step) / 4.0;
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{value:.0}</text>\n",
            width - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (i, r) in results.iter().enumerate() {
        let x0 = left + group_w * i as f64 + bar_w / 2.0;
        for (j, (_, color, value)) in series.iter().enumerate() {
            let v = value(r);
            let h = plot_h * v / max;
            svg += &format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\">\
                 <title>{v:.0} ns</title></rect>\n",
                x0 + bar_w * j as f64,
                height - bottom - h,
                bar_w * 0.9
            );
        }
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x0 + bar_w * series.len() as f64 / 2.0,
            height - bottom + 18.0,
            r.size
        );
    }
    for (j, (name, color, _)) in series.iter().enumerate() {
        let x = left + 190.0 * j as f64;
        svg += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>\n",
            height - 20.0,
            x + 16.0,
            height - 10.0
        );
    }
    svg + "</svg>\n"
}
