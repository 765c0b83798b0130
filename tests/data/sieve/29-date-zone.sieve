require ["date", "fileinto"];
if date :zone "+0000" "date" "time" "07:59:00" { fileinto "UtcTime"; }
if date :zone "+0000" "date" "weekday" "2" { fileinto "Tuesday"; }
