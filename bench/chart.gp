# Chart for bench/RESULTS.md: sub-requests/s (left) and CPU us per sub-request
# (right) per aggregator, from bench/chart.dat (bench/report.py).
set terminal svg size 960,420 dynamic font "sans,11" noenhanced
set output "bench/chart.svg"
set multiplot layout 1,2 title "fan-out benchmark: one run, 2 shared cores (higher is better left, lower right)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left
set xtics rotate by -30 scale 0
set grid ytics
set title "sub-requests per second"
plot "bench/chart.dat" using 2:xtic(1) title "throughput-10", '' using 3 title "throughput-100"
set title "CPU microseconds per sub-request (log scale)"
set logscale y
set key top left
plot "bench/chart.dat" every ::0::4 using 4:xtic(1) title "throughput-10", '' every ::0::4 using 5 title "throughput-100"
unset multiplot
