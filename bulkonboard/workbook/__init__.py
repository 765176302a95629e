"""Every workbook bulkonboard writes: report, results, template, generated passwords."""
